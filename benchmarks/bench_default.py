"""Wall time and peak memory of the main job, ``robustvision bench`` (target: under 10 minutes on 2 CPU cores).

Runs, each in a fresh process so peak memory (max RSS) is measured per step:

1. ``ensure_zoo`` for the bench's zoo preset: trains the default zoo, or reuses the cache (reported as such);
2. ``robustvision bench --preset <preset>`` into a fresh store, writing the report (health checks included);
3. the same command again: the resume path (every cell already stored, so it only plans and reports);
4. the same command with ``--no-checks`` into another fresh store: the cost of the cheap health checks
   (target: at most 15 % on top of the run without them). ``--skip-no-checks`` leaves this step out.

It then prints the step times, the targets, and where the evaluation time went (summed per noise kind from the
store's per-cell timings; ``check`` is the health checks).

Usage::

    python benchmarks/bench_default.py                   # the main job as `make bench` runs it
    python benchmarks/bench_default.py --preset quick    # the quick preset on the whole default zoo
    python benchmarks/bench_default.py --quick           # smoke run: quick preset, two zoo members
    python benchmarks/bench_default.py --home /tmp/rv    # ROBUSTVISION_HOME holding (or receiving) the zoo

Numbers depend on the machine and on what else runs on it; quote them with the hardware and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from _support import fail, print_prerequisites, run

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 600.0
# --quick: the two zoo members zoo_train.py --quick trains, evaluated with the quick preset
QUICK_MODELS = ["lenet5/standard", "mixer_tiny/standard"]

# Runs a command and reports its own wall time and its children's peak RSS on the last line of stdout.
WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t, "max_rss_mb": ru.ru_maxrss / 1024,
                  "cpu_s": ru.ru_utime + ru.ru_stime}))
"""


def measured(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> dict:
    with log.open("w") as fh:
        out = subprocess.run(
            [sys.executable, "-c", WRAPPER, *cmd], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=fh, text=True
        )
    lines = out.stdout.strip().splitlines()
    stats = json.loads(lines[-1])
    log.write_text(log.read_text() + "\n".join(lines[:-1]))
    if stats["rc"] != 0:
        last = (log.read_text().strip().splitlines() or ["(no output)"])[-1]
        fail(f"step failed (exit {stats['rc']}): {' '.join(cmd)}: {last} (full log: {log})")
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", choices=["quick", "default", "full"])
    ap.add_argument("--home", default=None, help="ROBUSTVISION_HOME (default: the environment's or ~/.cache)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for the bench (0: torch's default)")
    ap.add_argument("--workdir", default=None, help="where the store, report and logs go (default: a temp dir)")
    ap.add_argument(
        "--checkpoints", nargs="*", default=None, help="evaluate these checkpoints instead of the zoo (no zoo step)"
    )
    ap.add_argument("--skip-no-checks", action="store_true", help="do not time the run without health checks")
    ap.add_argument("--models", nargs="*", default=None, help="zoo members to train and evaluate (default: all)")
    ap.add_argument("--quick", action="store_true", help="smoke run: --preset quick --models " + " ".join(QUICK_MODELS))
    args = ap.parse_args()
    if args.quick:
        args.preset, args.models = "quick", args.models or QUICK_MODELS
        args.skip_no_checks = True  # a smoke run times one bench, not the health checks' overhead
    print_prerequisites([])

    work = Path(args.workdir or tempfile.mkdtemp(prefix="rv_bench_default_"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "160"}
    if args.home:
        env["ROBUSTVISION_HOME"] = args.home
    code = (
        "from robustvision.bench.plan import load_config; from robustvision.bench.sources import zoo_entries;"
        f"cfg = load_config({args.preset!r}, models={args.models or []!r}); print(len(zoo_entries(cfg)), 'zoo members')"
    )
    if args.checkpoints:
        zoo = {"seconds": 0.0, "max_rss_mb": 0.0, "cpu_s": 0.0}
    else:
        zoo = measured([sys.executable, "-c", code], env, work, work / "zoo.log")
    bench_cmd = [sys.executable, "-m", "robustvision.cli", "bench", "--preset", args.preset]
    for ck in args.checkpoints or []:
        bench_cmd += ["--checkpoints", ck]
    for m in args.models or []:
        bench_cmd += ["--models", m]
    bench_cmd += ["--store", str(work / "bench.db"), "--out", str(work / "report.html")]
    if args.threads:
        bench_cmd += ["--threads", str(args.threads)]
    first = measured(bench_cmd, env, work, work / "bench.log")
    again = measured(bench_cmd, env, work, work / "resume.log")
    bare = None
    if not args.skip_no_checks:
        bare_cmd = [c if c != str(work / "bench.db") else str(work / "bench_no_checks.db") for c in bench_cmd]
        bare_cmd = [c if c != str(work / "report.html") else str(work / "report_no_checks.html") for c in bare_cmd]
        bare = measured([*bare_cmd, "--no-checks"], env, work, work / "bench_no_checks.log")

    sys.path.insert(0, str(ROOT))
    from robustvision.bench.store import ResultsStore

    with ResultsStore(work / "bench.db", create=False) as store:
        cells = store.cells()
    per_kind = cells.groupby("kind")["seconds"].agg(["count", "sum"]).sort_values("sum", ascending=False)

    import torch

    models = "".join(f" --models {m}" for m in args.models or [])
    print(f"\nmain job: robustvision bench --preset {args.preset}{models}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'step':<34}{'wall s':>10}{'peak RSS MB':>14}")
    print(f"{'zoo (train or reuse)':<34}{zoo['seconds']:>10.1f}{zoo['max_rss_mb']:>14.0f}")
    print(f"{'bench (evaluate + report)':<34}{first['seconds']:>10.1f}{first['max_rss_mb']:>14.0f}")
    print(f"{'bench again (resume: all stored)':<34}{again['seconds']:>10.1f}{again['max_rss_mb']:>14.0f}")
    if bare is not None:
        print(f"{'bench --no-checks (evaluate+report)':<34}{bare['seconds']:>10.1f}{bare['max_rss_mb']:>14.0f}")
    total = zoo["seconds"] + first["seconds"]
    verdict = "meets" if total <= TARGET_S else "misses"
    print(f"zoo + bench: {total:.1f} s vs target {TARGET_S:.0f} s on 2 quiet cores ({verdict} it on this machine)")
    if bare is not None:
        extra = first["seconds"] / bare["seconds"] - 1
        verdict = "meets" if extra <= 0.15 else "misses"
        extra_cpu = first["cpu_s"] / bare["cpu_s"] - 1
        print(
            f"health checks: bench {first['seconds']:.1f} s with, {bare['seconds']:.1f} s without: "
            f"{100 * extra:+.1f} % wall vs target +15 % ({verdict} it on this machine); CPU time (all processes) "
            f"{first['cpu_s']:.1f} s with, {bare['cpu_s']:.1f} s without: {100 * extra_cpu:+.1f} %"
        )
    print(f"\n{len(cells)} cells; evaluation seconds per noise kind (sum of per-cell timings):")
    for kind, row in per_kind.iterrows():
        print(f"  {kind:<12}{int(row['count']):>6} cells{row['sum']:>10.1f} s")
    if "check" in per_kind.index:
        share = per_kind.loc["check", "sum"] / per_kind.loc[per_kind.index != "check", "sum"].sum()
        print(f"  health checks add {100 * share:.1f} % to the evaluation seconds of the other cells")
    print(f"\nstore, report and logs: {work}")


if __name__ == "__main__":
    run(main)
