"""``robustvision report``: write the self-contained HTML report from the results store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from robustvision.commands import check_writable_file, user_errors
from robustvision.commands.results import DEFAULT_STORE, STORE_HELP, check_filters

console = Console()


def report(
    store: str | None = typer.Option(DEFAULT_STORE, "--store", help=STORE_HELP),
    out: Path = typer.Option(Path("report.html"), "--out", help="HTML file to write (PNGs of the plots go beside it)."),
    run: str | None = typer.Option(None, "--run", help="Only this run id."),
    dataset: str | None = typer.Option(None, "--dataset", help="Only this data set."),
    baseline: str | None = typer.Option(None, "--baseline", help="mCE baseline model (name or name/technique)."),
) -> None:
    """Write one self-contained HTML report from the store: one section per capability with results.

    Benchmark (leaderboard, heatmap, curves, spreads, ablations, model cards), defence, physical attack, interactive
    segmentation and domain adaptation, each with its table and plot.
    """
    from robustvision.bench.report import write_report
    from robustvision.bench.store import ResultsStore

    with user_errors():
        check_writable_file("--out", out)
        with ResultsStore(store, create=False) as rs:
            check_filters(rs, run, dataset)
            path = write_report(rs, out, run_id=run, dataset=dataset, baseline=baseline)
        console.print(f"wrote {path}")
