"""``robustvision card MODEL``: the one-page robustness card of a benchmarked model (HTML plus a PNG)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from robustvision.commands import user_errors
from robustvision.commands.results import DEFAULT_STORE, STORE_HELP

console = Console()


def card(
    model: str = typer.Argument(..., help="Model as stored (name or name/technique), or its checkpoint file."),
    out: Path = typer.Option(Path("card.html"), "--out", help="HTML file to write (the PNG goes beside it)."),
    store: str | None = typer.Option(DEFAULT_STORE, "--store", help=STORE_HELP),
    dataset: str | None = typer.Option(None, "--dataset", help="Data set of the results (default: any)."),
    png: bool = typer.Option(True, "--png/--no-png", help="Also write the card's figure as a PNG."),
) -> None:
    """Write MODEL's robustness card from the results store: clean accuracy, robust accuracy per threat model with
    the attack that achieved it, the corruption error profile, the system-noise spread, the health checks and the
    training recipe. Run `robustvision bench` first."""
    from robustvision.bench.card import find_key, render_card
    from robustvision.bench.store import ResultsStore
    from robustvision.bench.summary import summarize

    with user_errors():
        name, model_card = model, None
        if Path(model).suffix == ".safetensors":
            from robustvision.bench.sources import entry_from_checkpoint
            from robustvision.models.checkpoints import read_card

            entry = entry_from_checkpoint(model)
            name, model_card = entry.key, read_card(model)
        with ResultsStore(store, create=False) as rs:
            summary = summarize(rs, dataset=dataset)
        key = find_key(summary, name, dataset)
        path = render_card(summary, key, out, card=model_card, png=png)
    console.print(f"wrote {path}" + (f" and {path.with_suffix('.png')}" if png else ""))
