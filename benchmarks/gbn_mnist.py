"""GBN against AVG, MAX and MSD on MNIST (LeNet-5), under one training budget, in one run.

Every method trains the same LeNet-5 (same initialisation, data order, optimiser, schedule, epochs, budgets
(eps1, eps2, epsinf) = (10, 2.0, 0.3) and attack steps) on the 8000-image part of a seeded 8000/2000 split of
the MNIST test set (the only MNIST split in the shared data), and is evaluated on the first ``--n-eval`` images of
the 2000 held out with the same attack list. GBN's numbers include the adaptive attacks (end to end through the
gated mixture, and against every branch assignment); its end-to-end-only union is printed beside them.

    python benchmarks/gbn_mnist.py --quick          # smoke run, a few minutes on 2 idle cores
    python benchmarks/gbn_mnist.py                  # the full comparison (see docs/defense-gbn.md)

Target (issue 4): GBN's union accuracy >= the best baseline's + 5 points. The script prints whether it holds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# (epochs, attack steps, training images, evaluation images, evaluation preset)
SETTINGS = {
    "quick": {"epochs": 1, "attack_steps": 3, "n_train": 2000, "n_eval": 200, "preset": "quick"},
    "full": {"epochs": 6, "attack_steps": 10, "n_train": 8000, "n_eval": 1000, "preset": "bench"},
    # What fits a heavily shared 2-core machine: the full split, fewer epochs/steps, fewer evaluation images.
    "medium": {"epochs": 2, "attack_steps": 5, "n_train": 8000, "n_eval": 300, "preset": "bench"},
}


def bench_attacks():
    """The full run's attack list: PGD with a restart per norm (+ MIM), plus APGD wherever it is installed."""
    from robustvision.defenses.evaluation import AttackSpec

    # The first attack of each norm is also the one the GBN adaptive attacks (branch, gate-steering) run.
    return [
        AttackSpec("linf", "pgd_linf", {"steps": 40}),
        AttackSpec("linf", "pgd_linf", {"steps": 40, "restarts": 1, "rel_stepsize": 0.05}),
        AttackSpec("linf", "apgd_ce", {"steps": 50}, optional=True),
        AttackSpec("linf", "mim_linf", {"steps": 20}),
        AttackSpec("l2", "pgd_l2", {"steps": 40}),
        AttackSpec("l2", "pgd_l2", {"steps": 40, "restarts": 1, "rel_stepsize": 0.05}),
        AttackSpec("l2", "apgd_l2", {"steps": 50}, optional=True),
        AttackSpec("l1", "pgd_l1_topk", {"steps": 40}),
        AttackSpec("l1", "pgd_l1_topk", {"steps": 40, "restarts": 1, "rel_stepsize": 0.05}),
        AttackSpec("l1", "apgd_l1", {"steps": 50}, optional=True),
    ]


def run_method(method: str, opts: dict) -> dict:
    """Train and evaluate one method (runs in its own process when --jobs > 1)."""
    import torch

    from robustvision.defenses.evaluation import attack_list, evaluate_robustness
    from robustvision.defenses.multi_perturbation import AttackSettings
    from robustvision.defenses.training import DefenseConfig, build_model, save_defense, split_dataset, train_defense
    from robustvision.runtime import seed_everything

    torch.set_num_threads(opts["threads"])
    train_set, test_set, info = split_dataset("mnist", opts["root"], seed=opts["seed"])
    if opts["n_train"] < len(train_set):
        train_set = train_set.subset(range(opts["n_train"]))
        info = {**info, "n_train_used": opts["n_train"]}
    cfg = DefenseConfig(
        method=method,
        dataset="mnist",
        arch="lenet5",
        epochs=opts["epochs"],
        batch_size=opts["batch_size"],
        lr=opts["lr"],
        attack=AttackSettings(steps=opts["attack_steps"]),
        seed=opts["seed"],
        device=opts["device"],
    )
    seed_everything(opts["seed"])  # the same backbone initialisation for every method
    model = build_model(cfg, num_classes=10, in_chans=1, image_size=28)
    t0 = time.time()
    every = max(1, -(-len(train_set) // opts["batch_size"]))  # one line per epoch

    def progress(step: int, total: int, stats: dict) -> None:
        if step % every == 0 or step == total:
            print(f"[{method}] step {step}/{total} loss {stats['loss']:.3f} ({time.time() - t0:.0f} s)", flush=True)

    history = train_defense(model, train_set, cfg, val_set=test_set, callback=progress)
    train_s = time.time() - t0
    print(f"[{method}] trained in {train_s:.0f} s; evaluating", flush=True)
    if opts["out_dir"]:
        path = Path(opts["out_dir"]) / f"mnist_{method}.safetensors"
        save_defense(model, path, cfg, history, info, extra={"root": str(opts["root"])})
    images, labels = test_set.tensors()
    images, labels = images[: opts["n_eval"]].to(model.mean.device), labels[: opts["n_eval"]].to(model.mean.device)
    specs = bench_attacks() if opts["preset"] == "bench" else attack_list(opts["preset"])
    report = evaluate_robustness(model, images, labels, cfg.budgets, specs, seed=opts["seed"])
    return {
        "method": method,
        "train_seconds": train_s,
        "eval_seconds": report.seconds,
        "history": [asdict(r) for r in history],
        "report": report.to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke settings (see SETTINGS)")
    parser.add_argument("--medium", action="store_true", help="reduced settings for a loaded machine (see SETTINGS)")
    parser.add_argument("--root", default=None, help="MNIST folder (default: <shared data>/mnist)")
    parser.add_argument("--methods", default="gbn,avg,max,msd")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--attack-steps", type=int, default=None)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-eval", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="methods run in parallel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-dir", default="runs/gbn_mnist", help="checkpoints and results.json ('' for none)")
    args = parser.parse_args()

    from _support import missing_data, print_prerequisites

    from robustvision.runtime import shared_data_dir

    print_prerequisites([], data=["MNIST test set (t10k-*-idx*-ubyte[.gz]): ../shared/data/mnist or --root"])
    root = args.root
    if root is None:
        shared = shared_data_dir()
        if shared is None or not (shared / "mnist").is_dir():
            missing_data(
                "MNIST (../shared/data/mnist: t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)",
                "https://yann.lecun.com/exdb/mnist/ or any mirror",
                "--root DIR",
            )
        root = str(shared / "mnist")
    mode = "quick" if args.quick else "medium" if args.medium else "full"
    opts = dict(SETTINGS[mode])
    for key in ("epochs", "attack_steps", "n_train", "n_eval"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    opts.update(
        root=root,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        batch_size=args.batch_size,
        lr=args.lr,
        out_dir=args.out_dir or None,
    )
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    print(
        f"GBN MNIST benchmark ({mode}): {opts['epochs']} epochs, {opts['attack_steps']} attack steps, "
        f"{opts['n_train']} train / {opts['n_eval']} eval images, attacks '{opts['preset']}', seed {args.seed}, "
        f"{args.jobs} job(s) x {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    start = time.time()
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run_method, methods, [opts] * len(methods)))
    else:
        results = [run_method(m, opts) for m in methods]
    wall = time.time() - start

    header = f"{'method':<8}{'clean':>8}{'l1':>8}{'l2':>8}{'linf':>8}{'union':>8}{'e2e union':>11}"
    header += f"{'train s':>9}{'eval s':>8}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        rep = r["report"]
        pn = rep["per_norm"]
        e2e = f"{100 * rep['e2e_union']:.1f}" if rep["e2e_union"] is not None else "-"
        print(
            f"{r['method']:<8}{100 * rep['clean']:>8.1f}{100 * pn['l1']:>8.1f}{100 * pn['l2']:>8.1f}"
            f"{100 * pn['linf']:>8.1f}{100 * rep['union']:>8.1f}{e2e:>11}{r['train_seconds']:>9.0f}"
            f"{r['eval_seconds']:>8.0f}"
        )
    print(f"(accuracy in % of {opts['n_eval']} held-out images; GBN rows include the adaptive attacks)")
    for r in results:
        rep = r["report"]
        if rep["gate_accuracy"]:
            for layer, accs in rep["gate_accuracy"].items():
                print(
                    f"{r['method']} gate accuracy {layer}: " + ", ".join(f"{d} {100 * a:.1f}%" for d, a in accs.items())
                )
            print(f"{r['method']} samples broken only by branch-assignment attacks: {rep['branch_broken']}")
            print(f"{r['method']} samples broken only by gate-steering attacks: {rep.get('gate_broken')}")
        if rep["skipped"]:
            print(f"{r['method']}: optional attacks not installed: {', '.join(rep['skipped'])}")
    by = {r["method"]: r["report"]["union"] for r in results}
    if "gbn" in by and len(by) > 1:
        best = max((m for m in by if m != "gbn"), key=by.get)
        gap = 100 * (by["gbn"] - by[best])
        verdict = "met" if gap >= 5 else "NOT met"
        print(f"GBN union - best baseline ({best}) union = {gap:+.1f} points: target (+5) {verdict}")
    print(f"wall time {wall:.0f} s (load average now {os.getloadavg()[0]:.1f})")
    if opts["out_dir"]:
        out = Path(opts["out_dir"]) / f"results_{mode}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"mode": mode, "opts": opts, "wall_seconds": wall, "results": results}, indent=2))
        print(f"wrote {out}")


if __name__ == "__main__":
    from _support import run

    run(main)
