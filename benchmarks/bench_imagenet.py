"""``robustvision bench --preset imagenet``: three pretrained ImageNet models on real photos, timed, with the table.

Runs the preset in a child process (wall time and the CPU seconds of the whole process tree), then reads the
store and prints, per model: clean top-1, mean corruption accuracy, mCE normalised by AlexNet's published errors
and relative mCE, robust accuracy per norm at RobustART's three budgets, the image-pipeline system noise (mean,
std) and the inference precisions. Targets printed beside: the run within 20 minutes on 2 CPU cores; Lite0's clean
top-1 at least 85/100 (the pretrained-loader test's figure).

Usage::

    python benchmarks/bench_imagenet.py                  # the preset: 3 models, 100 photos
    python benchmarks/bench_imagenet.py --quick          # Lite0, a handful of images and noises (smoke run)
    python benchmarks/bench_imagenet.py --root DIR       # another ImageNet folder (class tree or labels.csv)
    python benchmarks/bench_imagenet.py --store runs/imagenet.db   # keep (and resume) the store

Data: ``../shared/data/imagenet_samples`` (100 ImageNet validation photos) unless ``--root`` is given. Numbers
depend on the machine and its load: the script prints both, quote them together.
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

from _support import missing_data, print_prerequisites, run

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 1200.0
QUICK = [
    "--models",
    "tf_efficientnet_lite0",
    "--n-examples",
    "16",
    "--n-natural",
    "4",
    "--n-system",
    "4",
    "--n-adversarial",
    "2",
    "--attack-steps",
    "2",
    "--noises",
    "pgd_linf@8/255,pgd_l2@2,fog@3,gaussian_noise@3,pipeline_decode_opencv,pipeline_resize_opencv_area,precision_int8",
]
WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t, "cpu_s": ru.ru_utime + ru.ru_stime}))
"""


def default_root() -> Path | None:
    """``../shared/data/imagenet_samples`` when present."""
    sys.path.insert(0, str(ROOT))
    from robustvision.runtime import shared_data_dir

    shared = shared_data_dir()
    return shared / "imagenet_samples" if shared is not None and (shared / "imagenet_samples").is_dir() else None


def table(store: str, console_width: int = 160) -> None:
    """Print the per-model table of the imagenet cells in ``store``."""
    import pandas as pd

    from robustvision.bench.store import ResultsStore
    from robustvision.bench.summary import summarize

    with ResultsStore(store) as rs:
        summary = summarize(rs, dataset="imagefolder", baseline="alexnet")
    cells, board = summary.cells, summary.leaderboard
    pd.set_option("display.width", console_width)
    rows = []
    for model, group in cells.groupby("model"):
        b = board[board["model"] == model].iloc[0]
        row = {"model": model, "clean": 100 * b["clean_accuracy"], "n clean": int(group[group.kind == "clean"].n.max())}
        nat = group[group.kind == "natural"]
        if not nat.empty:
            row["corr acc"] = 100 * nat["accuracy"].mean()
            row["mCE (AlexNet)"] = 100 * b.get("mce_lower_better", float("nan"))
            row["rel mCE"] = 100 * b.get("relative_mce_lower_better", float("nan"))
        adv = group[group.kind == "adversarial"]
        for noise, sub in adv.groupby("noise"):
            for r in sub.sort_values("severity").itertuples():
                row[f"{noise.replace('pgd_', '')}@{r.severity:.4g}"] = 100 * r.accuracy
        pipe = group[group.noise.str.startswith("pipeline_")]
        if not pipe.empty:
            row["pipeline mean"] = 100 * pipe["accuracy"].mean()
            row["pipeline std"] = 100 * pipe["accuracy"].std(ddof=0)
            row["pipeline min"] = 100 * pipe["accuracy"].min()
        for r in group[group.noise.str.startswith("precision_")].itertuples():
            row[r.noise.replace("precision_", "")] = 100 * r.accuracy
        rows.append(row)
    out = pd.DataFrame(rows).set_index("model").round(1)
    print(out.T.to_string())
    counts = cells.groupby("kind")["n"].max().to_dict()
    print(f"images per cell: {counts}; mCE and rel. mCE in % of AlexNet's (15 main corruptions)")
    lite0 = board[board["model"] == "tf_efficientnet_lite0"]
    if not lite0.empty and counts.get("clean") == 100:
        top1 = round(100 * float(lite0.iloc[0]["clean_accuracy"]))
        print(f"Lite0 clean top-1: {top1}/100 (target >= 85/100: {'met' if top1 >= 85 else 'NOT met'})")


def main() -> None:
    """Run the preset in a child process, then print its table and cost."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="ImageNet folder (default ../shared/data/imagenet_samples)")
    parser.add_argument("--store", default=None, help="results store (default: a fresh temporary one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="Lite0 on 16 photos, 7 noise settings (smoke run)")
    args = parser.parse_args()
    root = Path(args.root) if args.root else default_root()
    if root is None or not root.is_dir():
        missing_data("the ImageNet sample folder", "../shared/data/imagenet_samples", "--root DIR")
    print_prerequisites([], [f"ImageNet validation photos in {root}"])
    tmp = tempfile.mkdtemp(prefix="rv_imagenet_")
    store = args.store or str(Path(tmp) / "imagenet.db")
    cmd = [sys.executable, "-m", "robustvision", "bench", "--preset", "imagenet", "--dataset", "imagefolder"]
    cmd += ["--root", str(root), "--store", store, "--out", str(Path(tmp) / "imagenet.html"), "--device", args.device]
    cmd += QUICK if args.quick else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.setdefault("COLUMNS", "160")
    load0 = os.getloadavg()[0]
    print("running:", " ".join(cmd[1:]), flush=True)
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], env=env, stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    print("\n".join(lines[:-1]))
    stats = json.loads(lines[-1])
    if stats["rc"] != 0:
        raise RuntimeError(f"robustvision bench exited with status {stats['rc']}")
    load1 = os.getloadavg()[0]
    sys.path.insert(0, str(ROOT))
    table(store)
    cores = os.cpu_count() or 1
    print(
        f"wall {stats['seconds']:.0f} s, CPU {stats['cpu_s']:.0f} s on {cores} cores ({platform.processor() or 'cpu'}),"
        f" load average {load0:.1f} -> {load1:.1f}; target (full preset) <= {TARGET_S:.0f} s wall on 2 idle cores,"
        f" i.e. <= {2 * TARGET_S:.0f} CPU s"
    )


if __name__ == "__main__":
    run(main)
