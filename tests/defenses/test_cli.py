"""``robustvision defend``: train then evaluate on the shared MNIST split; bad input is one clear error."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from robustvision.cli import app
from robustvision.errors import UserError

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.shared_data
def test_defend_method_trains_and_evaluate_reports(shared_data, tmp_path):
    ckpt = tmp_path / "gbn.safetensors"
    root = str(shared_data / "mnist")
    args = ["defend", "--method", "gbn", "--dataset", "mnist", "--root", root, "--epochs", "1"]
    args += ["--max-steps", "2", "--attack-steps", "1", "--out", str(ckpt), "--threads", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert ckpt.is_file() and ckpt.with_suffix(".json").is_file()
    card = json.loads(ckpt.with_suffix(".json").read_text())
    assert card["technique"] == "gbn" and card["data"]["n_train"] == 8000
    out = tmp_path / "report.json"
    result = runner.invoke(
        app, ["defend", "evaluate", str(ckpt), "--n", "16", "--preset", "quick", "--json", str(out), "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n"] == 16 and report["is_gbn"] and set(report["per_norm"]) == {"l1", "l2", "linf"}
    assert report["union"] <= min(report["per_norm"].values()) <= report["clean"]
    assert "gate net.bn1" in result.output
    assert "perfect routing" in result.output and "routing of end-to-end examples" in result.output
    assert report["perfect_routing_union"] is not None and set(report["routing"]) >= {"clean", "linf"}
    # A domain list that does not match the checkpoint.
    result = runner.invoke(app, ["defend", "evaluate", str(ckpt), "--domains", "l1,l2,linf", "--n", "4"])
    assert isinstance(result.exception, UserError)
    assert "does not match the checkpoint's GBN branches" in str(result.exception)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--norms", "l1,l3"], "unknown norm 'l3'"),
        (["--method", "gbm"], "did you mean 'gbn'"),
        (["--method", "gbn", "--layers", "net.bn7"], "layer 'net.bn7' does not exist"),
        (["--eps", "l2"], "must look like NORM=VALUE"),
        (["--recipe", "referense"], "unknown recipe 'referense'; did you mean 'reference'"),
        (["--gate-adversary", "mixtur"], "unknown gate adversary 'mixtur'; did you mean 'mixture'"),
        (["--method", "max", "--gate-once"], "apply to --method gbn only"),
    ],
)
def test_bad_training_input_is_one_clear_error(tmp_path, args, message):
    # The digits set is embedded (no files), so these errors surface without shared data.
    result = runner.invoke(app, ["defend", "train", "--dataset", "digits", "--epochs", "1", "--max-steps", "1", *args])
    assert isinstance(result.exception, UserError), result.output
    assert message in str(result.exception)


def test_methods_lists_every_method():
    result = runner.invoke(app, ["defend", "methods"])
    assert result.exit_code == 0
    for name in ("gbn", "avg", "max", "msd", "eat", "pgd_linf", "standard"):
        assert name in result.output
