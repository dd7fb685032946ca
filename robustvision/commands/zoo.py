"""``robustvision zoo``: list the architectures, show one, train or inspect a zoo preset."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from robustvision.commands import user_errors

app = typer.Typer(no_args_is_help=True, help="The model zoo: list architectures, train the default zoo.")
console = Console()


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


@app.command("list")
def list_(
    pattern: str = typer.Argument("*", help="Glob over names, e.g. 'vit*'."),
    family: str | None = typer.Option(None, help="cnn, transformer or mlp."),
    image_size: int = typer.Option(32, help="Input side at which parameters and FLOPs are counted."),
) -> None:
    """Print every architecture: name, family, parameters and forward FLOPs at --image-size."""
    from robustvision.models import MODELS, count_flops, count_parameters, create_model, list_models

    with user_errors():
        if family is not None and family not in ("cnn", "transformer", "mlp"):
            raise ValueError(f"--family must be cnn, transformer or mlp, got {family!r}")
        names = list_models(pattern, family=family)
        if not names:
            raise ValueError(f"no architecture matches {pattern!r}" + (f" in family {family!r}" if family else ""))
        table = Table(title=f"model zoo at {image_size}x{image_size} px")
        for col in ("name", "family", "params", "FLOPs", "what"):
            table.add_column(col, justify="right" if col in ("params", "FLOPs") else "left")
        from rich.progress import Progress

        with Progress(transient=True, console=Console(stderr=True)) as bar:
            task = bar.add_task("counting", total=len(names))
            for name in names:
                entry = MODELS.meta(name)["entry"]
                model = create_model(name, image_size=image_size)
                flops = count_flops(model, image_size)
                table.add_row(name, entry.family, _human(count_parameters(model)), _human(flops), entry.note)
                bar.advance(task)
    console.print(table)


@app.command("show")
def show(name: str = typer.Argument(..., help="Architecture name.")) -> None:
    """Show one architecture: library, constructor arguments, and its trained members in the default preset."""
    from robustvision.models import MODELS
    from robustvision.training.zoo_presets import get_preset, is_cached, member_path

    with user_errors():
        entry = MODELS.meta(name)["entry"]
    table = Table(title=name, show_header=False)
    for key in ("family", "source", "arch", "kwargs", "small_kwargs", "note"):
        table.add_row(key, str(getattr(entry, key)))
    preset = get_preset("default")
    for member in preset.members:
        if member.model == name:
            state = str(member_path(preset, member)) if is_cached(preset, member) else "not trained yet"
            table.add_row(f"default/{member.technique}", state)
    console.print(table)


@app.command("presets")
def presets() -> None:
    """List the zoo presets, their members and whether each is cached."""
    from robustvision.training.zoo_presets import get_preset, is_cached, list_presets, member_config

    for pname in list_presets():
        preset = get_preset(pname)
        table = Table(title=f"preset {pname!r} on {preset.dataset}: {preset.description}")
        for col in ("model", "technique", "model_kwargs", "epochs", "optimizer", "cached"):
            table.add_column(col)
        for m in preset.members:
            cfg = member_config(preset, m)
            kwargs = ", ".join(f"{k}={v}" for k, v in m.model_kwargs.items())
            table.add_row(
                m.model, m.technique, kwargs, str(cfg.epochs), cfg.optimizer, "yes" if is_cached(preset, m) else "no"
            )
        console.print(table)


@app.command("train")
def train(
    preset: str = typer.Option("default", help="Zoo preset (robustvision zoo presets)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    retrain: bool = typer.Option(False, "--retrain", help="Train every member again, replacing the cache."),
    only: list[str] | None = typer.Option(None, help="Only these members (model or model/technique; repeatable)."),
    jobs: int = typer.Option(
        0, help="Members trained at once, one CPU thread each (0: 2 on CPU if 2+ cores, 1 on CUDA)."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train (or reuse from ROBUSTVISION_HOME) every model of a zoo preset and print their clean accuracy."""
    import json

    from robustvision.training.zoo_presets import ensure_zoo

    with user_errors():
        done = ensure_zoo(preset, device=device, progress=progress, retrain=retrain, only=only, jobs=jobs or None)
    table = Table(title=f"zoo preset {preset!r}")
    for col in ("model", "technique", "family", "clean acc", "train s", "checkpoint"):
        table.add_column(col)
    for name, technique, path in done:
        card = json.loads(path.with_suffix(".json").read_text())
        table.add_row(
            name,
            technique,
            card.get("family", "?"),
            f"{card.get('clean_accuracy', float('nan')):.4f}",
            str(card.get("train_seconds", "?")),
            str(path),
        )
    console.print(table)
