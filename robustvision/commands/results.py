"""``robustvision results``: read the results store (leaderboard, raw rows) and export it."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from robustvision.commands import check_writable_file, user_errors

app = typer.Typer(no_args_is_help=True, help="Read the results store: print, export CSV/Parquet.")
console = Console()

STORE_HELP = (
    "Results store: a SQLAlchemy URL (postgresql+psycopg://...) or a SQLite file path "
    "(default: $ROBUSTVISION_STORE, else runs/robustvision.db)."
)
DEFAULT_STORE = None  # ResultsStore resolves it: $ROBUSTVISION_STORE, else runs/robustvision.db


def _cell(col: str, value: object) -> str:
    from robustvision.bench.report import PERCENT

    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{100 * value:.1f}" if col in PERCENT else f"{value:.3f}"
    return str(value)


# Compact console headers (the report's headers carry the full labels and formulas).
CONSOLE_COLUMNS = {
    "clean_accuracy": "clean",
    "robust_accuracy": "robust",
    "ar": "AR",
    "wcar": "WCAR",
    "corruption_accuracy": "corr",
    "mce_lower_better": "mCE",
    "flip_probability_lower_better": "FP",
    "system_mean_accuracy": "sys",
    "nsd": "NSD",
}


def leaderboard_table(
    summary, title: str = "robustvision leaderboard", full: bool = False, width: int | None = None
) -> Table:
    """A rich table of the leaderboard (accuracies in %, arrows give each metric's direction).

    ``full`` prints every leaderboard column; otherwise the compact :data:`CONSOLE_COLUMNS`, as many as fit in
    ``width`` characters (the report and ``results export`` have everything).
    """
    from robustvision.bench.metrics import METRICS
    from robustvision.bench.report import LEADERBOARD_COLUMNS

    board = summary.leaderboard
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1))
    wanted = LEADERBOARD_COLUMNS if full else list(CONSOLE_COLUMNS)
    variants = [f"{m}/{t}" for m, t in zip(board.get("model", []), board.get("technique", []), strict=True)]
    used = max([len("model/technique"), *map(len, variants)]) + 3
    cols, headers = [], []
    for c in wanted:
        if c not in board.columns:
            continue
        info = METRICS[c]
        header = f"{CONSOLE_COLUMNS.get(c, info.label)}{'↑' if info.higher_is_better else '↓'}"
        if not full and width is not None and used + max(len(header), 5) + 3 > width:
            break
        used += max(len(header), 5) + 3
        cols.append(c)
        headers.append(header)
    table.add_column("model/technique", no_wrap=True)
    for h in headers:
        table.add_column(h, justify="right", no_wrap=True)
    health = "health" in board.columns and (board["health"] != "-").any()
    if health:  # the health checks' verdict: ok, or the checks that warned
        table.add_column("health")
    if not board.empty:
        for _, row in board.sort_values("clean_accuracy", ascending=False).iterrows():
            extra = [("[green]ok[/]" if row["health"] == "ok" else f"[yellow]{row['health']}[/]")] if health else []
            table.add_row(f"{row['model']}/{row['technique']}", *[_cell(c, row[c]) for c in cols], *extra)
    caption = "accuracies, AR, WCAR, FP in %"
    if summary.baseline and "mce_lower_better" in cols:
        caption += f"; mCE baseline: {summary.baseline}"
    if len(cols) < len([c for c in wanted if c in board.columns]):
        caption += "; more columns: a wider terminal, `results show --all` or the report"
    table.caption = caption
    return table


def check_filters(rs, run: str | None = None, dataset: str | None = None) -> None:
    """``ValueError`` for a ``--run`` or ``--dataset`` the store does not hold (instead of an empty answer)."""
    if run is None and dataset is None:
        return
    runs = rs.runs()
    if run is not None and run not in set(runs["run_id"]):
        recent = ", ".join(runs["run_id"].tail(3)) or "none"
        raise ValueError(f"no run {run!r} in the results store {rs.display_url} (latest: {recent})")
    if dataset is not None and dataset not in set(runs["dataset"]):
        have = ", ".join(sorted(set(runs["dataset"]))) or "none"
        raise ValueError(f"no results for data set {dataset!r} in {rs.display_url} (have: {have})")


@app.command("show")
def show(
    store: str | None = typer.Option(DEFAULT_STORE, "--store", help=STORE_HELP),
    run: str | None = typer.Option(None, "--run", help="Only this run id."),
    dataset: str | None = typer.Option(None, "--dataset", help="Only this data set."),
    baseline: str | None = typer.Option(None, "--baseline", help="mCE baseline model (name or name/technique)."),
    raw: bool = typer.Option(False, "--raw", help="Print the stored rows instead of the leaderboard."),
    full: bool = typer.Option(False, "--all", help="Print every leaderboard column (wide)."),
    limit: int = typer.Option(200, "--limit", help="Most raw rows to print."),
) -> None:
    """Print the leaderboard computed from the store (or the raw rows with --raw)."""
    from robustvision.bench.store import ResultsStore
    from robustvision.bench.summary import summarize

    with user_errors():
        with ResultsStore(store, create=False) as rs:
            check_filters(rs, run, dataset)
            if raw:
                df = rs.results(run_id=run, dataset=dataset)
                table = Table(title=f"{len(df)} result rows in {rs.display_url}")
                cols = ["run_id", "capability", "model", "technique", "noise", "kind", "severity", "metric", "value"]
                cols.append("n")
                for c in cols:
                    table.add_column(c)
                for _, row in df.tail(limit).iterrows():
                    table.add_row(*[f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols])
                console.print(table)
                return
            summary = summarize(rs, run_id=run, dataset=dataset, baseline=baseline)
            if summary.leaderboard.empty:
                counts = rs.results(run_id=run, dataset=dataset)["capability"].value_counts()
                if counts.empty:
                    console.print(f"The results store {rs.display_url} holds no results yet; run `robustvision bench`.")
                else:
                    held = ", ".join(f"{n} {c}" for c, n in counts.items())
                    console.print(
                        f"The results store {rs.display_url} holds no benchmark results (it holds {held} rows); "
                        "see them with `results show --raw` or `robustvision report`."
                    )
                return
            console.print(leaderboard_table(summary, full=full, width=console.width))


@app.command("export")
def export(
    out: Path = typer.Option(..., "--out", help="Output file (.csv or .parquet)."),
    fmt: str | None = typer.Option(None, "--format", help="csv or parquet (default: from the file suffix)."),
    store: str | None = typer.Option(DEFAULT_STORE, "--store", help=STORE_HELP),
    run: str | None = typer.Option(None, "--run", help="Only this run id."),
) -> None:
    """Export every stored result row (one row per run, cell and metric) to CSV or Parquet."""
    from robustvision.bench.store import ResultsStore

    with user_errors():
        check_writable_file("--out", out)
        with ResultsStore(store, create=False) as rs:
            check_filters(rs, run)
            path = rs.export(out, fmt, run_id=run)
            console.print(f"wrote {path}")
