"""The base install (no ``app``, ``physical`` or ``bench`` extra) runs the CLI; a missing extra is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the extras install (pyproject.toml): imports of these fail in the child process, as on a base install.
EXTRA_MODULES = ("fastapi", "uvicorn", "starlette", "multipart", "pycocotools", "trimesh", "rtree")


def _run(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        f"""
        import sys
        for name in {EXTRA_MODULES!r}:
            sys.modules[name] = None  # "import name" now raises ModuleNotFoundError
        """
    ) + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_cli_runs_without_the_extras(tmp_path):
    res = _run(
        """
        from typer.testing import CliRunner

        from robustvision.cli import SUBCOMMANDS, app

        runner = CliRunner()
        for args in [["--help"], *([name, "--help"] for name, _, _ in SUBCOMMANDS)]:
            out = runner.invoke(app, args)
            assert out.exit_code == 0, (args, out.output, out.exception)
            print(" ".join(args), "ok")
        """,
        tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "--help ok" in res.stdout and "annotate --help ok" in res.stdout and "das --help ok" in res.stdout


@pytest.mark.parametrize(
    ("args", "extra"),
    [(["annotate", "serve", "{tmp}"], "app")],
)
def test_a_command_that_needs_an_extra_names_it_in_one_line(tmp_path, args, extra):
    argv = [a.format(tmp=tmp_path) for a in args]
    res = _run(
        f"""
        sys.argv = ["robustvision", *{argv!r}]
        from robustvision.cli import main

        main()
        """,
        tmp_path,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert f"pip install 'robustvision[{extra}]'" in err, err


def test_coco_masks_need_the_app_extra_and_say_so(tmp_path):
    res = _run(
        """
        import numpy as np

        from robustvision.app.annotate.geometry import mask_to_rle

        try:
            mask_to_rle(np.ones((4, 4), bool))
        except ModuleNotFoundError as err:
            print(err)
        """,
        tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pip install 'robustvision[app]'" in res.stdout
