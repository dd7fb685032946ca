"""``robustvision results``: read the results store (leaderboard, raw rows) and export it."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from robustvision.commands import user_errors

app = typer.Typer(no_args_is_help=True, help="Read the results store: print, export CSV/Parquet.")
console = Console()

STORE_HELP = "Results store: a SQLAlchemy URL (postgresql+psycopg://...) or a SQLite file path."
DEFAULT_STORE = "runs/robustvision.db"


def _cell(col: str, value: object) -> str:
    from robustvision.bench.report import PERCENT

    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{100 * value:.1f}" if col in PERCENT else f"{value:.3f}"
    return str(value)


def leaderboard_table(summary, title: str = "robustvision leaderboard") -> Table:
    """A rich table of the leaderboard (accuracies in %, arrows give each metric's direction)."""
    from robustvision.bench.metrics import METRICS
    from robustvision.bench.report import LEADERBOARD_COLUMNS

    board = summary.leaderboard
    table = Table(title=title, show_lines=False)
    cols = ["model", "technique", "family", *[c for c in LEADERBOARD_COLUMNS if c in board.columns]]
    for c in cols:
        info = METRICS.get(c)
        label = f"{info.label} {'↑' if info.higher_is_better else '↓'}" if info else c
        table.add_column(label, justify="left" if info is None else "right")
    if not board.empty:
        for _, row in board.sort_values("clean_accuracy", ascending=False).iterrows():
            table.add_row(*[_cell(c, row[c]) for c in cols])
    if summary.baseline:
        table.caption = f"mCE baseline: {summary.baseline}; accuracies, AR, WCAR in %"
    return table


@app.command("show")
def show(
    store: str = typer.Option(DEFAULT_STORE, "--store", help=STORE_HELP),
    run: str | None = typer.Option(None, "--run", help="Only this run id."),
    dataset: str | None = typer.Option(None, "--dataset", help="Only this data set."),
    baseline: str | None = typer.Option(None, "--baseline", help="mCE baseline model (name or name/technique)."),
    raw: bool = typer.Option(False, "--raw", help="Print the stored rows instead of the leaderboard."),
    limit: int = typer.Option(200, "--limit", help="Most raw rows to print."),
) -> None:
    """Print the leaderboard computed from the store (or the raw rows with --raw)."""
    from robustvision.bench.store import ResultsStore
    from robustvision.bench.summary import summarize

    with user_errors():
        with ResultsStore(store, create=False) as rs:
            if raw:
                df = rs.results(run_id=run, dataset=dataset)
                table = Table(title=f"{len(df)} result rows in {rs.display_url}")
                cols = ["run_id", "model", "technique", "noise", "kind", "severity", "metric", "value", "n"]
                for c in cols:
                    table.add_column(c)
                for _, row in df.tail(limit).iterrows():
                    table.add_row(*[f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols])
                console.print(table)
                return
            summary = summarize(rs, run_id=run, dataset=dataset, baseline=baseline)
            if summary.leaderboard.empty:
                console.print(f"The results store {rs.display_url} holds no results yet; run `robustvision bench`.")
                return
            console.print(leaderboard_table(summary))


@app.command("export")
def export(
    out: Path = typer.Option(..., "--out", help="Output file (.csv or .parquet)."),
    fmt: str | None = typer.Option(None, "--format", help="csv or parquet (default: from the file suffix)."),
    store: str = typer.Option(DEFAULT_STORE, "--store", help=STORE_HELP),
    run: str | None = typer.Option(None, "--run", help="Only this run id."),
) -> None:
    """Export every stored result row (one row per run, cell and metric) to CSV or Parquet."""
    from robustvision.bench.store import ResultsStore

    with user_errors():
        with ResultsStore(store, create=False) as rs:
            path = rs.export(out, fmt, run_id=run)
            console.print(f"wrote {path}")
