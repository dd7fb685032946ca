"""GBN and its variants against AVG, MAX, MSD and E-AT on MNIST (LeNet-5), under one training budget.

Every method trains the same LeNet-5 (same initialisation, data order, optimiser, schedule, epochs, budgets
(eps1, eps2, epsinf) = (10, 2.0, 0.3) and training attacks) on the 8000-image part of a seeded 8000/2000 split of
the MNIST test set (the only MNIST split in the shared data). The plateau schedule and best-weight selection of the
reference recipe read the last 1000 held-out images; evaluation uses the first ``--n-eval`` held-out images, with
the same attack list for every method. GBN rows include the adaptive attacks (end to end through the gated
mixture, against every branch assignment, and gate steering); for GBN the script also prints the end-to-end-only
union, the perfect-routing union (each norm attacked and judged on its own branch) and the routing table.

Methods: ``gbn``, ``avg``, ``max``, ``msd``, ``eat`` and the GBN variants ``gbn+mix`` (gates and branches also learn
from examples crafted end to end against the gated mixture), ``gbn+once`` (one gate decision, at the first layer,
reused deeper) and ``gbn+mix+once``.

    python benchmarks/gbn_mnist.py --quick          # smoke run, a few minutes
    python benchmarks/gbn_mnist.py --medium         # 2 epochs, 5-step attacks, fast recipe
    python benchmarks/gbn_mnist.py --long           # reference recipe, 10-step attacks (see docs/defense-gbn.md)

Finished methods are cached under ``--out-dir/<mode>/`` (weights + results), so an interrupted run resumes where it
stopped; ``--fresh`` retrains. Target: a GBN variant's union >= MAX's union + 2 points at the same budget.
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

# (recipe, epochs, attack steps, training images, evaluation images, evaluation preset, methods)
ALL_METHODS = "max,gbn,gbn+mix,gbn+once,avg,msd,eat,gbn+mix+once"
SETTINGS = {
    "quick": {"recipe": "fast", "epochs": 1, "attack_steps": 3, "n_train": 2000, "n_eval": 200, "preset": "quick"},
    "medium": {"recipe": "fast", "epochs": 2, "attack_steps": 5, "n_train": 8000, "n_eval": 300, "preset": "bench"},
    "full": {"recipe": "fast", "epochs": 6, "attack_steps": 10, "n_train": 8000, "n_eval": 1000, "preset": "bench"},
    # The largest budget that fits about an hour of a shared 2-core CPU for all eight methods (see the docs).
    "long": {"recipe": "reference", "epochs": 3, "attack_steps": 10, "n_train": 8000, "n_eval": 500, "preset": "bench"},
}
VARIANT_FLAGS = {"mix": {"gate_adversary": "mixture"}, "once": {"gate_once": True}}


def parse_method(name: str) -> tuple[str, dict]:
    """``gbn+mix+once`` -> (``gbn``, {gate_adversary: mixture, gate_once: True}); plain names pass through."""
    base, *flags = name.split("+")
    extra: dict = {}
    for flag in flags:
        if flag not in VARIANT_FLAGS:
            raise ValueError(f"unknown variant flag {flag!r} in {name!r}; expected one of {list(VARIANT_FLAGS)}")
        if base != "gbn":
            raise ValueError(f"variant flags apply to gbn only, got {name!r}")
        extra.update(VARIANT_FLAGS[flag])
    return base, extra


def bench_attacks():
    """The full run's attack list: PGD with a restart per norm (+ MIM), plus APGD wherever it is installed."""
    from robustvision.defenses.evaluate import AttackSpec

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
    """Train and evaluate one method, or reload its cached result (runs in its own process when --jobs > 1)."""
    import torch

    from robustvision.defenses.evaluate import attack_list, evaluate_robustness
    from robustvision.defenses.train import (
        DefenseConfig,
        build_model,
        load_defense,
        save_defense,
        split_dataset,
        train_defense,
        validation_part,
    )

    torch.set_num_threads(opts["threads"])
    cache = Path(opts["out_dir"]) / opts["mode"] if opts["out_dir"] else None
    result_path = cache / f"{method}.json" if cache else None
    if result_path is not None and result_path.exists() and not opts["fresh"]:
        cached = json.loads(result_path.read_text())
        if cached.get("opts") == _key(opts):
            print(f"[{method}] cached result {result_path}", flush=True)
            return cached
    base, extra = parse_method(method)
    train_set, test_set, info = split_dataset("mnist", opts["root"], seed=opts["seed"])
    if opts["n_train"] < len(train_set):
        train_set = train_set.subset(range(opts["n_train"]))
        info = {**info, "n_train_used": opts["n_train"]}
    val_set = validation_part(test_set)
    cfg = DefenseConfig.from_recipe(
        opts["recipe"],
        attack_steps=opts["attack_steps"],
        method=base,
        dataset="mnist",
        arch="lenet5",
        epochs=opts["epochs"],
        batch_size=opts["batch_size"],
        lr=opts["lr"],
        seed=opts["seed"],
        device=opts["device"],
        **extra,
    )
    weights = cache / f"mnist_{method}.safetensors" if cache else None
    t0 = time.time()
    if weights is not None and weights.exists() and not opts["fresh"] and _same_config(weights, cfg):
        model, card = load_defense(weights, device=cfg.device)
        history, train_s = card.get("history", []), card.get("train_seconds", 0.0)
        print(f"[{method}] reusing trained weights {weights}", flush=True)
    else:
        model = build_model(  # initialised from cfg.seed: the same backbone for every method
            cfg, num_classes=10, in_chans=1, image_size=28
        )
        every = max(1, -(-len(train_set) // opts["batch_size"]))  # one line per epoch

        def progress(step: int, total: int, stats: dict) -> None:
            if step % every == 0 or step == total:
                print(f"[{method}] step {step}/{total} loss {stats['loss']:.3f} ({time.time() - t0:.0f} s)", flush=True)

        records = train_defense(model, train_set, cfg, val_set=val_set, callback=progress)
        history, train_s = [asdict(r) for r in records], time.time() - t0
        if weights is not None:
            save_defense(
                model, weights, cfg, records, info, extra={"root": str(opts["root"]), "train_seconds": train_s}
            )
    print(f"[{method}] trained in {train_s:.0f} s; evaluating", flush=True)
    images, labels = test_set.tensors()
    images, labels = images[: opts["n_eval"]].to(model.mean.device), labels[: opts["n_eval"]].to(model.mean.device)
    specs = bench_attacks() if opts["preset"] == "bench" else attack_list(opts["preset"])
    report = evaluate_robustness(model, images, labels, cfg.budgets, specs, seed=opts["seed"])
    result = {
        "method": method,
        "opts": _key(opts),
        "config": cfg.to_dict(),
        "train_seconds": train_s,
        "eval_seconds": report.seconds,
        "history": history,
        "report": report.to_dict(),
    }
    if result_path is not None:
        result_path.parent.mkdir(parents=True, exist_ok=True)
        result_path.write_text(json.dumps(result, indent=2))
    print(f"[{method}] evaluated in {report.seconds:.0f} s", flush=True)
    return result


def _key(opts: dict) -> dict:
    """The settings a cached result must match to be reused."""
    keys = ("recipe", "epochs", "attack_steps", "n_train", "n_eval", "preset", "seed", "batch_size", "lr")
    return {k: opts[k] for k in keys}


def _same_config(weights: Path, cfg) -> bool:
    from robustvision.models.checkpoints import read_card

    try:
        return read_card(weights).get("defense") == json.loads(json.dumps(cfg.to_dict()))
    except (OSError, ValueError):
        return False


def print_results(results: list[dict], n_eval: int) -> None:
    """The comparison table, then per GBN model the routing table and branch-alone accuracy."""
    from robustvision.defenses.evaluate import RobustnessReport, format_routing

    header = f"{'method':<14}{'clean':>7}{'l1':>7}{'l2':>7}{'linf':>7}{'union':>7}{'e2e':>7}{'perfect':>9}"
    header += f"{'train s':>9}{'eval s':>8}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        rep = r["report"]
        pn = rep["per_norm"]
        e2e = f"{100 * rep['e2e_union']:.1f}" if rep.get("e2e_union") is not None else "-"
        pr = f"{100 * rep['perfect_routing_union']:.1f}" if rep.get("perfect_routing_union") is not None else "-"
        print(
            f"{r['method']:<14}{100 * rep['clean']:>7.1f}{100 * pn['l1']:>7.1f}{100 * pn['l2']:>7.1f}"
            f"{100 * pn['linf']:>7.1f}{100 * rep['union']:>7.1f}{e2e:>7}{pr:>9}{r['train_seconds']:>9.0f}"
            f"{r['eval_seconds']:>8.0f}"
        )
    print(
        f"(accuracy in % of {n_eval} held-out images; union = robust to every attack of every norm; GBN rows include "
        "the adaptive attacks; e2e = union under the end-to-end attacks only; perfect = union when each norm is "
        "attacked and judged on its own branch)"
    )
    for r in results:
        rep = r["report"]
        if rep.get("routing"):
            report = RobustnessReport(**rep)
            print(f"\n{r['method']}:")
            print("\n".join(format_routing(report)))
            print(f"samples broken only by branch-assignment attacks: {rep['branch_broken']}")
            print(f"samples broken only by gate-steering attacks: {rep.get('gate_broken')}")
        if rep["skipped"]:
            print(f"{r['method']}: optional attacks not installed: {', '.join(rep['skipped'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="smoke settings: 1 epoch, 2000 images, 3-step attacks")
    modes.add_argument("--medium", action="store_true", help="2 epochs, 8000 images, 5-step attacks, fast recipe")
    modes.add_argument("--long", action="store_true", help="reference recipe, 3 epochs, 10-step attacks")
    parser.add_argument("--root", default=None, help="MNIST folder (default: <shared data>/mnist)")
    parser.add_argument("--methods", default=ALL_METHODS)
    parser.add_argument("--recipe", default=None, help="fast | reference (default: the mode's)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--attack-steps", type=int, default=None, help="0: the reference's own iteration counts")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-eval", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="methods run in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-dir", default="runs/gbn_mnist", help="cache of weights and results ('' for none)")
    parser.add_argument("--fresh", action="store_true", help="ignore cached weights and results")
    args = parser.parse_args()

    from _support import missing_data, print_prerequisites

    from robustvision.defenses.train import check_recipe
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
    mode = "quick" if args.quick else "medium" if args.medium else "long" if args.long else "full"
    opts = dict(SETTINGS[mode])
    for key in ("recipe", "epochs", "attack_steps", "n_train", "n_eval", "lr"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    opts.setdefault("lr", None)
    if opts["attack_steps"] == 0:
        opts["attack_steps"] = None
    try:
        check_recipe(opts["recipe"])
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        for m in methods:
            parse_method(m)
    except ValueError as err:
        parser.error(str(err))
    if opts["n_eval"] > 1000:
        parser.error("--n-eval must be <= 1000: the last 1000 held-out images are the validation set")
    opts.update(
        mode=mode,
        root=root,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        batch_size=args.batch_size,
        out_dir=args.out_dir or None,
        fresh=args.fresh,
    )
    print(
        f"GBN MNIST benchmark ({mode}, recipe {opts['recipe']}): {opts['epochs']} epochs, "
        f"{opts['attack_steps'] or 'reference'} attack steps, {opts['n_train']} train / {opts['n_eval']} eval images, "
        f"attacks '{opts['preset']}', seed {args.seed}, {args.jobs} job(s) x {args.threads} thread(s), "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    start = time.time()
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run_method, methods, [opts] * len(methods)))
    else:
        results = [run_method(m, opts) for m in methods]
    wall = time.time() - start
    print_results(results, opts["n_eval"])
    by = {r["method"]: r["report"]["union"] for r in results}
    gbns = [m for m in by if m.startswith("gbn")]
    if gbns and "max" in by:
        best = max(gbns, key=by.get)
        gap = 100 * (by[best] - by["max"])
        verdict = "met" if gap >= 2 else "NOT met"
        print(f"\nbest GBN variant ({best}) union - MAX union = {gap:+.1f} points: target (+2) {verdict}")
    print(f"wall time {wall:.0f} s (load average now {os.getloadavg()[0]:.1f})")
    if opts["out_dir"]:
        out = Path(opts["out_dir"]) / f"results_{mode}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"mode": mode, "opts": opts, "wall_seconds": wall, "results": results}, indent=2))
        print(f"wrote {out}")


if __name__ == "__main__":
    from _support import run

    run(main)
