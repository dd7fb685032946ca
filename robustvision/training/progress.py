"""The progress bar every long job of the package draws (training, benchmarks, attacks): one look everywhere."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(
    *, enabled: bool = True, counted: bool = True, console: Console | None = None, transient: bool = False
) -> Progress:
    """A rich ``Progress`` with description, bar, ``done/total``, a free ``info`` field and times.

    Args:
        enabled: draw it (``False`` on non-main ranks and in quiet runs).
        counted: show the bar, count and remaining time (``False`` for open-ended work).
        console: where to draw (stderr keeps stdout clean for tables).
        transient: erase it when done.

    Example:
        >>> with progress_bar(enabled=False) as bar:
        ...     task = bar.add_task("train", total=3, info="")
        ...     bar.update(task, advance=1, info="loss 0.31")
    """
    columns = [TextColumn("[bold]{task.description}")]
    if counted:
        columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    columns += [TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
    return Progress(*columns, console=console, disable=not enabled, transient=transient)
