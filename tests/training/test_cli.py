"""CLI of the training capability (zoo, data, train) and training under torchrun with 2 processes (gloo, CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from robustvision.cli import app

runner = CliRunner()


def cli_subprocess(
    root: Path, *args: str, env_extra: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run the real entry point from the checkout ``root`` (``main``: expected errors -> one line, exit status 2)."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "robustvision.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_zoo_list_prints_params_and_flops():
    result = runner.invoke(app, ["zoo", "list", "deit*", "--image-size", "32"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "deit_tiny" in result.output and "transformer" in result.output and "lenet5" not in result.output
    assert "M" in result.output  # parameters / FLOPs in millions


def test_zoo_show_and_presets():
    result = runner.invoke(app, ["zoo", "show", "lenet5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "LeNet-5" in result.output and "default/pgd_at" in result.output
    result = runner.invoke(app, ["zoo", "presets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "mixer_tiny" in result.output and "trades" in result.output


def test_data_list_and_show():
    result = runner.invoke(app, ["data", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and all(n in result.output for n in ("digits", "mnist", "cifar10", "imagefolder"))
    result = runner.invoke(app, ["data", "show", "digits"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "1347" in result.output and "450" in result.output


def test_train_command_on_a_tiny_subset(tmp_path):
    out = tmp_path / "run" / "model.safetensors"
    args = ["train", "--model", "lenet5", "--technique", "label_smoothing", "--epochs", "1", "--subset", "64"]
    args += ["--device", "cpu", "--no-progress", "--out", str(out), "--set", "batch_size=32", "--seed", "5"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["technique"] == "label_smoothing" and card["config"]["batch_size"] == 32 and card["config"]["seed"] == 5
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    # --resume on a finished run trains nothing more and keeps the result.
    result = runner.invoke(app, [*args, "--resume"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".json").read_text())["clean_accuracy"] == card["clean_accuracy"]


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["train", "--model", "resnet81"], "resnet18"),
        (["train", "--model", "lenet5", "--technique", "pgd-at"], "pgd_at"),
        (["zoo", "show", "vit_tiy"], "vit_tiny"),
        (["data", "show", "digts"], "digits"),
        (["zoo", "train", "--preset", "defualt"], "default"),
    ],
)
def test_unknown_names_fail_as_user_errors_with_a_suggestion(args, hint):
    from robustvision.errors import UserError

    result = runner.invoke(app, args)
    assert isinstance(result.exception, UserError), result.output
    assert "did you mean" in str(result.exception) and hint in str(result.exception)


def test_the_entry_point_turns_a_user_error_into_exit_2_and_one_line(repo_root):
    proc = cli_subprocess(repo_root, "train", "--model", "resnet81")
    assert proc.returncode == 2, proc.stderr
    assert "did you mean" in proc.stderr and "resnet18" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_gloo(repo_root, tmp_path):
    out = tmp_path / "ddp" / "model.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += ["-m", "robustvision.cli", "train", "--model", "lenet5", "--epochs", "1", "--subset", "128"]
    cmd += ["--device", "cpu", "--no-progress", "--out", str(out), "--set", "batch_size=16"]
    env = {**os.environ, "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["world_size"] == 2
    # 128 images over 2 ranks at 16 per rank and step: 4 steps per epoch on each rank.
    state = torch.load(out.parent / "checkpoints" / "last.pt", weights_only=True)
    assert state["history"][0]["epoch"] == 1 and state["scheduler"]["last_epoch"] == 4
    assert proc.stdout.count("lenet5 / standard on digits") == 1  # only rank 0 prints
