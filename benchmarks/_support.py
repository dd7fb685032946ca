"""What the benchmark scripts share: their printed prerequisites, the one-line exits, prerequisite building.

A benchmark never ends in a traceback: :func:`run` turns an unexpected exception into one ``error:`` line (set
``ROBUSTVISION_TRACEBACK=1`` to see the traceback), and absent real data ends the script with one ``skipped:`` line
and exit status :data:`SKIPPED`, which ``benchmarks/smoke.py`` counts as skipped, not failed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
# automake's "skipped" status: the script ran, but the real data it measures on is absent
SKIPPED = 77


def print_prerequisites(commands: Sequence[str], data: Sequence[str] = ()) -> None:
    """Print, at the start of a run, the commands this benchmark assumes have run and the real data it reads.

    Args:
        commands: shell commands, in order, from an empty ``ROBUSTVISION_HOME`` (none: the package ships or
            generates what it needs).
        data: real data sets read, with where they come from.
    """
    if commands:
        print("prerequisites, in order, from an empty ROBUSTVISION_HOME:", flush=True)
        for cmd in commands:
            print(f"  {cmd}", flush=True)
    else:
        print("prerequisite commands: none (the package ships or generates what this benchmark needs)", flush=True)
    for item in data:
        print(f"real data read: {item}", flush=True)


def missing_data(what: str, where: str, option: str) -> NoReturn:
    """End the script with one line saying what real data is missing, where to get it and how to point to it."""
    print(f"skipped: {what} is missing; get it from {where} and pass {option}", file=sys.stderr, flush=True)
    sys.exit(SKIPPED)


def fail(message: str) -> NoReturn:
    """End the script with one ``error:`` line and exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def run(main: Callable[[], object]) -> None:
    """Call ``main()``; an unexpected exception becomes one ``error:`` line and exit status 1, not a traceback."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if os.environ.get("ROBUSTVISION_TRACEBACK"):
            raise
        name = Path(sys.argv[0]).name
        print(
            f"error: {name}: {type(err).__name__}: {err} (ROBUSTVISION_TRACEBACK=1 shows the traceback)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)


def cli(args: Sequence[str]) -> None:
    """Run ``robustvision ARGS`` from this checkout in a child process (prerequisite building).

    The command is printed first; a failure ends the script with the command and its last error line.
    """
    cmd = [sys.executable, "-m", "robustvision.cli", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    shown = "robustvision " + shlex.join(args)
    print(f"building: {shown}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        fail(f"`{shown}` failed (exit {proc.returncode}): {last}")
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
