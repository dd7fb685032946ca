"""Smoke run: every ``benchmarks/*.py --quick`` in a fresh temporary ``ROBUSTVISION_HOME``, one after another.

Each benchmark runs in its own process with the temporary home and a temporary working directory, so it builds
(and caches there) whatever prerequisites it needs, as on a fresh clone, and the checkout is left untouched. A
benchmark passes when it exits 0 without printing a traceback; one whose real evaluation data is absent exits with
status 77 and one ``skipped:`` line, and counts as skipped, not failed. Anything else fails the smoke run.

Usage::

    make smoke                                   # the same as the next line, after installing
    python benchmarks/smoke.py                   # with ../shared/data when it is there
    python benchmarks/smoke.py --no-shared       # as on a machine without ../shared (ROBUSTVISION_SHARED_DATA=none)
    python benchmarks/smoke.py --only das,iseg   # a subset
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _support import ROOT, SKIPPED

TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Outcome:
    """One benchmark's smoke result."""

    name: str
    status: str  # passed | skipped | failed
    seconds: float
    note: str
    cpu_seconds: float = 0.0  # user + sys of the benchmark and its children: the figure a shared machine keeps


def discover(folder: Path) -> list[Path]:
    """The benchmark scripts in ``folder``: every ``*.py`` but helpers (``_*.py``) and this script."""
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_") and p.name != Path(__file__).name)


def last_line(text: str) -> str:
    """The last line that says something (not a table border)."""
    lines = [line.strip() for line in text.strip().splitlines() if any(c.isalnum() for c in line)]
    return lines[-1] if lines else "(no output)"


def run_one(script: Path, env: dict[str, str], cwd: Path, log: Path, timeout: float) -> Outcome:
    """Run ``script --quick`` and classify it: exit 0 without a traceback passes, exit 77 is skipped."""
    start, before = time.perf_counter(), _children_cpu()
    # its own session, so a timeout ends the benchmark's whole process group (pool workers, CLI children) too
    proc = subprocess.Popen(
        [sys.executable, str(script), "--quick"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, rc = proc.communicate()[0], None
    seconds = time.perf_counter() - start
    log.write_text(output)
    outcome = _classify(script.stem, rc, output, seconds, timeout, log)
    outcome.cpu_seconds = _children_cpu() - before
    return outcome


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _classify(name: str, rc: int | None, output: str, seconds: float, timeout: float, log: Path) -> Outcome:
    if rc is None:
        return Outcome(name, "failed", seconds, f"timed out after {timeout:.0f} s (log: {log})")
    if TRACEBACK in output:
        return Outcome(name, "failed", seconds, f"printed a traceback, exit {rc} (log: {log})")
    if rc == SKIPPED:
        skipped = [line for line in output.splitlines() if line.startswith("skipped:")]
        return Outcome(name, "skipped", seconds, skipped[-1] if skipped else last_line(output))
    if rc != 0:
        return Outcome(name, "failed", seconds, f"exit {rc}: {last_line(output)} (log: {log})")
    return Outcome(name, "passed", seconds, last_line(output))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-shared", action="store_true", help="hide ../shared/data (ROBUSTVISION_SHARED_DATA=none)")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--benchmarks", type=Path, default=ROOT / "benchmarks", help="folder of benchmark scripts")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed to each benchmark")
    ap.add_argument("--keep", action="store_true", help="keep the temporary home, working folder and logs")
    args = ap.parse_args()

    scripts = discover(args.benchmarks)
    only = [n.strip().removesuffix(".py") for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(only) - {p.stem for p in scripts})
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; have {', '.join(p.stem for p in scripts)}")
    scripts = [p for p in scripts if not only or p.stem in only]

    tmp = Path(tempfile.mkdtemp(prefix="rv_smoke_"))
    home, work, logs, scratch = tmp / "home", tmp / "work", tmp / "logs", tmp / "tmp"
    for folder in (home, work, logs, scratch):
        folder.mkdir()
    # TMPDIR: the benchmarks' own temporary folders go inside ours and leave with it
    env = {**os.environ, "ROBUSTVISION_HOME": str(home), "TMPDIR": str(scratch), "COLUMNS": "160"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env.pop("ROBUSTVISION_TRACEBACK", None)
    if args.no_shared:
        env["ROBUSTVISION_SHARED_DATA"] = "none"
    shared = "hidden (--no-shared)" if args.no_shared else (os.environ.get("ROBUSTVISION_SHARED_DATA") or "auto")
    print(f"smoke: {len(scripts)} benchmarks --quick, ROBUSTVISION_HOME={home}, shared data {shared}", flush=True)

    outcomes = []
    start = time.perf_counter()
    for script in scripts:
        print(f"  {script.stem} ...", end=" ", flush=True)
        outcome = run_one(script, env, work, logs / f"{script.stem}.log", args.timeout)
        outcomes.append(outcome)
        print(f"{outcome.status} ({outcome.seconds:.0f} s, {outcome.cpu_seconds:.0f} CPU-s)", flush=True)
    total = time.perf_counter() - start

    width = max([len("benchmark"), *(len(o.name) for o in outcomes)])
    print(f"\n{'benchmark':<{width}}  {'status':<8}{'wall s':>8}{'CPU s':>8}  note")
    for o in outcomes:
        print(f"{o.name:<{width}}  {o.status:<8}{o.seconds:>8.0f}{o.cpu_seconds:>8.0f}  {o.note}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("passed", "skipped", "failed")}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{counts['passed']} passed, {counts['skipped']} skipped, {counts['failed']} failed in {total:.0f} s wall, "
        f"{sum(o.cpu_seconds for o in outcomes):.0f} CPU-s ({os.cpu_count()} CPUs, load average now {load})"
    )
    if counts["failed"] or args.keep:
        print(f"home, working folder and logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if counts["failed"] else 0)


if __name__ == "__main__":
    main()
