"""The bench, results and report commands: bad input is one clear line; results show/export; report."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from robustvision.cli import app
from robustvision.errors import UserError

runner = CliRunner()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--noises", "pgd_linf@2.0"], "out of range"),
        (["--noises", "gaussian_noise@6"], "severity must be an integer from 1 to 5"),
        (["--noises", "pgd_lnf"], "did you mean 'pgd_linf'"),
        (["--preset", "huge"], "unknown preset"),
        (["--executor", "ray", "--ray-address", "127.0.0.1:9"], "cannot reach the Ray cluster"),
        (["--ray-address", "127.0.0.1:9"], "--ray-address needs --executor ray"),
        (["--store", "postgresql+psycopg://nobody@127.0.0.1:9/db", "--noises", "fgsm"], "cannot connect"),
        (["--device", "cuda:7", "--noises", "fgsm", "--checkpoints", "/nonexistent.safetensors"], "not found"),
    ],
)
def test_bench_bad_input_is_a_user_error(args, message, tmp_path):
    if "gaussian_noise" in args[-1]:
        pytest.importorskip("robustvision.noises.corruptions", reason="natural noises not installed")
    result = runner.invoke(app, ["bench", "--out", "", "--store", str(tmp_path / "s.db"), *args])
    assert isinstance(result.exception, UserError), result.output
    assert message in str(result.exception)
    assert "\n" not in str(result.exception)


def test_bench_error_prints_one_line_and_exit_2(repo_root, tmp_path):
    # A wide COLUMNS: rich hard-wraps long lines at the terminal width (80 when not a tty).
    env = {**os.environ, "PYTHONPATH": str(repo_root) + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "400"}
    done = subprocess.run(
        [sys.executable, "-m", "robustvision.cli", "bench", "--noises", "pgd_linf@2.0", "--out", ""],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "out of range" in lines[0], done.stderr
    assert not (tmp_path / "runs").exists()  # nothing was created before the input was checked


def test_results_show_export_and_report(synthetic_store, tmp_path):
    db = tmp_path / "syn.db"
    synthetic_store(f"sqlite:///{db}").close()
    shown = runner.invoke(app, ["results", "show", "--store", str(db)])
    assert shown.exit_code == 0, shown.output
    assert "resnet_s/standard" in shown.output and "clean" in shown.output
    raw = runner.invoke(app, ["results", "show", "--store", str(db), "--raw", "--limit", "3"])
    assert raw.exit_code == 0 and "result rows" in raw.output
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"r.{fmt}"
        res = runner.invoke(app, ["results", "export", "--store", str(db), "--out", str(out), "--format", fmt])
        assert res.exit_code == 0, res.output
        df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
        assert {"model", "noise", "metric", "value", "config_hash"} <= set(df.columns) and len(df) > 0
    rep = runner.invoke(app, ["report", "--store", str(db), "--out", str(tmp_path / "rep.html")])
    assert rep.exit_code == 0, rep.output
    assert (tmp_path / "rep.html").is_file() and (tmp_path / "rep-heatmap.png").is_file()


def test_results_of_a_missing_store_is_a_user_error(tmp_path):
    result = runner.invoke(app, ["results", "show", "--store", str(tmp_path / "none.db")])
    assert isinstance(result.exception, UserError) and "does not exist" in str(result.exception)
