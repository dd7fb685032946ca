"""``robustvision train``: train one zoo model on one data set with one technique (argument parsing and printing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from robustvision.commands import check_at_least, user_errors

console = Console()


def parse_assignments(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["a=1", "b=[16, 32]"]`` -> ``{"a": 1, "b": [16, 32]}`` (values parsed as YAML scalars/lists)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"{what} {item!r}: the value is not a valid YAML scalar or list: {err}") from err
    return out


def train(
    model: str = typer.Option(..., "--model", "-m", help="Zoo architecture (robustvision zoo list)."),
    dataset: str = typer.Option("digits", "--dataset", "-d", help="Data set (robustvision data list)."),
    technique: str = typer.Option("standard", "--technique", "-t", help="Training technique (see docs/training.md)."),
    epochs: int | None = typer.Option(None, help="Epochs (default: the config's, 10)."),
    batch_size: int | None = typer.Option(None, help="Images per step per process."),
    lr: float | None = typer.Option(None, help="Peak learning rate."),
    seed: int | None = typer.Option(None, help="Seed of the whole run."),
    root: Path | None = typer.Option(None, help="Folder of the data set's files (mnist, cifar10, imagefolder)."),
    image_size: int | None = typer.Option(None, help="Resize the data to this side."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N (default: the config's, auto)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of TrainConfig fields (the base)."),
    set_: list[str] | None = typer.Option(None, "--set", help="Config field override KEY=VALUE (repeatable)."),
    model_arg: list[str] | None = typer.Option(
        None, "--model-arg", help="Model constructor override KEY=VALUE, e.g. depth=4 (repeatable)."
    ),
    out: Path | None = typer.Option(
        None,
        help="Final checkpoint (.safetensors); default runs/train/<model>-<technique>-<dataset>/model.safetensors.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last per-epoch checkpoint beside --out."),
    subset: int | None = typer.Option(None, help="Train on N images of a seeded permutation (quick runs)."),
    amp: bool = typer.Option(True, help="Mixed precision on CUDA (ignored on CPU)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a zoo model with a training technique; writes safetensors + a JSON model card.

    Runs under torchrun too: `torchrun --nproc_per_node 2 -m robustvision.cli train --model lenet5 ...`.
    """
    from robustvision.training import TrainConfig, create_technique, train_model
    from robustvision.training.trainer import dist_env

    with user_errors():
        check_at_least("--image-size", image_size, 1, " pixel")
        check_at_least("--epochs", epochs, 1)
        check_at_least("--batch-size", batch_size, 1)
        check_at_least("--subset", subset, 1, " image")
        create_technique(technique)  # unknown names fail before any work
        from robustvision.data import DATASETS
        from robustvision.models import MODELS

        if not model.startswith("timm:"):
            MODELS.get(model)
        DATASETS.get(dataset)
        base = TrainConfig.from_yaml(config) if config is not None else TrainConfig()
        run_dir = out.parent if out is not None else Path("runs") / "train" / f"{model}-{technique}-{dataset}"
        out_path = out if out is not None else run_dir / "model.safetensors"
        if out_path.suffix != ".safetensors":
            raise ValueError(f"--out must end in .safetensors, got {str(out_path)!r}")
        overrides: dict[str, Any] = {
            "amp": amp,
            "progress": progress,
            "resume": resume,
            "checkpoint_dir": str(run_dir / "checkpoints"),
        }
        for key, value in (
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("lr", lr),
            ("seed", seed),
            ("device", device),
        ):
            if value is not None:
                overrides[key] = value
        overrides.update(parse_assignments(set_, "--set"))
        metrics = train_model(
            model,
            dataset,
            technique,
            base,
            overrides=overrides,
            model_kwargs=parse_assignments(model_arg, "--model-arg"),
            root=root,
            image_size=image_size,
            save_to=out_path,
            train_subset=subset,
        )
    if dist_env()[0] != 0:  # under torchrun only rank 0 prints
        return
    table = Table(title=f"{model} / {technique} on {dataset}")
    for col in ("clean acc", "test loss", "train loss", "epochs", "seconds", "checkpoint"):
        table.add_column(col)
    table.add_row(
        f"{metrics['clean_accuracy']:.4f}",
        f"{metrics['test_loss']:.4f}",
        f"{metrics['train_loss']:.4f}",
        str(metrics["epochs"]),
        f"{metrics['seconds']:.1f}",
        str(metrics["checkpoint"]),
    )
    console.print(table)
