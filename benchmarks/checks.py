"""Time and verdicts of ``robustvision check`` on zoo models (target: at most 120 s for one small model on 2 cores;
no standard model flagged; a deliberately masked model flagged).

For each zoo member asked for, runs every health check (the checks' reference PGD-20 with Madry's step 2.5 eps/20
at l-inf 8/255, 100 digits test images in the bench's evaluation order, seed 0; the transfer check crafts on
lenet5/standard, or resnet18/standard for lenet5/standard itself) and prints the verdicts, the clean, default
(RobustART PGD-20, step 0.075 eps), reference and worst-case accuracies, the default attack gap (default minus worst,
information about the default attack, not a warning) and the wall and CPU time; then the same for the first model
wrapped in a temperature (logits x 1e4) and a ReLU head.

Usage::

    python benchmarks/checks.py                               # lenet5/standard, plain and masked
    python benchmarks/checks.py --models all --home /tmp/rv   # every member of the default zoo
    python benchmarks/checks.py --quick                       # lenet5/standard, 30 images, no transfer check

Wall time depends on what else runs on the machine: the script prints the load average and the process CPU time
beside it; quote both.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET_S = 120.0


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lenet5/standard", help="comma-separated zoo members, or 'all'")
    ap.add_argument("--home", default=None, help="ROBUSTVISION_HOME holding (or receiving) the zoo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=100, help="images checked")
    ap.add_argument("--no-masked", action="store_true", help="skip the masked negative controls")
    ap.add_argument("--json", default=None, help="write every result to this JSON file")
    ap.add_argument("--quick", action="store_true", help="lenet5/standard, 30 images, no surrogate (smoke)")
    args = ap.parse_args()
    if args.quick:
        args.models, args.n = "lenet5/standard", min(args.n, 30)
    if args.home:
        os.environ["ROBUSTVISION_HOME"] = args.home

    from _support import print_prerequisites

    print_prerequisites([])  # zoo members are trained (seeded) and cached on first use
    import torch

    from robustvision.bench.plan import BenchConfig
    from robustvision.bench.runner import load_eval_data
    from robustvision.bench.sources import resolve_model_spec
    from robustvision.checks import CheckConfig, MaskedLogits, run
    from robustvision.training import get_preset

    torch.set_num_threads(args.threads)
    if args.models == "all":  # standard models first: they are the ones that must not be flagged
        members = sorted((m.label for m in get_preset("default").members), key=lambda k: not k.endswith("/standard"))
    else:
        members = args.models.split(",")
    images, labels, _ = load_eval_data(BenchConfig(dataset="digits", seed=0))
    config = CheckConfig(n_examples=args.n, seed=0)
    surrogates = {}

    def surrogate_for(label: str):
        if args.quick:  # no second zoo model to train: the transfer check is reported as skipped
            return None
        other = "resnet18/standard" if label == "lenet5/standard" else "lenet5/standard"
        if other not in surrogates:
            surrogates[other] = resolve_model_spec(other)[0]
        return surrogates[other]

    jobs = []
    for i, label in enumerate(members):
        model = resolve_model_spec(label)[0]
        jobs.append((label, model, surrogate_for(label)))
        if i == 0 and not args.no_masked:  # the negative controls right after the first model
            for mode in ("temperature", "relu"):
                jobs.append((f"{label} + {mode} mask", MaskedLogits(model, mode=mode), model))

    rows = []
    for label, model, sur in jobs:
        w0, c0 = time.perf_counter(), cpu_seconds()
        report = run(model, (images, labels), config=config, surrogate=sur)
        wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
        rows.append(
            {
                "model": label,
                "failed": report.failed,
                "clean": report.clean_accuracy,
                "default_pgd": report.default_accuracy,
                "pgd": report.pgd_accuracy,
                "worst": report.worst_case_accuracy,
                "default_gap": report.default_gap,
                "wall_s": wall,
                "cpu_s": cpu,
                "checks": report.to_rows(),
            }
        )
        r = rows[-1]
        print(
            f"{label}: clean {100 * r['clean']:.1f} %, default PGD {100 * r['default_pgd']:.1f} %, reference PGD "
            f"{100 * r['pgd']:.1f} %, worst {100 * r['worst']:.1f} %; "
            f"{wall:.1f} s wall, {cpu:.1f} s CPU; warn: {', '.join(report.failed) or '-'}",
            flush=True,
        )
        if args.json:  # written after every model, so an interrupted run keeps what it measured
            Path(args.json).write_text(json.dumps(rows, indent=2))

    print(f"\nrobustvision check: every check, {args.n} digits test images, l-inf eps 8/255, seed 0")
    print(
        f"default: RobustART PGD-{config.default_steps} (step {config.default_rel_stepsize:g} eps); reference: "
        f"PGD-{config.steps} (step {config.reference_rel_stepsize:.3g} eps, Madry); gap = default - worst (info)"
    )
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} torch threads")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    head = f"{'model':<34}{'clean':>7}{'def.PGD':>8}{'ref.PGD':>8}{'worst':>7}{'gap':>6}{'CPU s':>8}{'wall s':>8}"
    print(head + "  warns")
    for r in rows:
        print(
            f"{r['model']:<34}{100 * r['clean']:>7.1f}{100 * r['default_pgd']:>8.1f}{100 * r['pgd']:>8.1f}"
            f"{100 * r['worst']:>7.1f}{100 * r['default_gap']:>6.1f}{r['cpu_s']:>8.1f}{r['wall_s']:>8.1f}"
            f"  {', '.join(r['failed']) or '-'}"
        )
    standard = [r for r in rows if r["model"].endswith("/standard")]
    flagged = [r["model"] for r in standard if r["failed"]]
    masked = [r for r in rows if "mask" in r["model"]]
    names = f" ({', '.join(flagged)})" if flagged else ""
    print(
        f"\nstandard models flagged: {len(flagged)} of {len(standard)}{names}"
        + "".join(f"; {r['model']}: {'flagged' if r['failed'] else 'NOT flagged'}" for r in masked)
    )
    first = rows[0]
    verdict = "meets" if first["wall_s"] <= TARGET_S else "misses"
    print(f"\n{first['model']}: {first['wall_s']:.1f} s wall vs target {TARGET_S:.0f} s ({verdict} it on this machine)")


if __name__ == "__main__":
    from _support import run

    run(main)
