"""Benchmark: source-only vs MinEnt vs CFContra on the generated street-scene UDA benchmark.

For each seed, one source-only warm start (``--warmup`` steps) is trained, then each method continues from a copy
of it for ``--iters`` steps (source-only keeps training on source only, so every method gets the same number of
steps), and is evaluated on the labelled target validation split (9 classes, mIoU). It also reports the memory
bank's size for several image sizes and batch sizes and the training time per step.

Usage:
    python benchmarks/uda.py                 # 3 seeds (about 20-30 min on 2 free CPU cores)
    python benchmarks/uda.py --quick         # 1 seed, short schedule (a smoke run)
    python benchmarks/uda.py --arch deeplabv2_efficientnet_lite0 --pretrained   # ImageNet-initialised encoder
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _support import print_prerequisites, run

from robustvision.segmentation.uda import (
    CLASS_NAMES,
    AdaptConfig,
    PrototypeMemory,
    adapt,
    create_segmenter,
    evaluate_segmenter,
    generate_streets,
)
from robustvision.segmentation.uda.memory import downsample_labels
from robustvision.segmentation.uda.specs import open_domain

METHODS = ("source_only", "minent", "cfcontra")
# GTA5 -> Cityscapes, DeepLab-v2 ResNet-101, mIoU (see docs/domain-adaptation.md for sources): context only.
PAPER = {"source_only": 36.6, "minent": 42.3, "cfcontra": 45.8}


def bank_bytes_table(arch: str, feature_dim: int) -> list[tuple[str, int, int]]:
    """Bank bytes after updates at several (batch, image size), beside one batch's per-pixel features."""
    model = create_segmenter(arch).eval()
    rows = []
    for batch, (h, w) in ((1, (64, 128)), (4, (64, 128)), (2, (128, 256)), (1, (256, 512))):
        bank = PrototypeMemory(model.num_classes, feature_dim)
        with torch.no_grad():
            f = model(torch.rand(batch, 3, h, w)).features
        labels = downsample_labels(torch.randint(0, 19, (batch, h, w)), tuple(f.shape[-2:]))
        bank.update(f, labels)
        rows.append((f"batch {batch}, {h}x{w}", bank.nbytes(), f.numel() * f.element_size()))
    return rows


def run_seed(seed: int, args: argparse.Namespace, size: tuple[int, int], weights: dict) -> tuple[dict, int, str]:
    """One seed: warm start, then the three methods from copies of it. Returns (results, bank bytes, log)."""
    torch.set_num_threads(args.threads)
    h, w = size
    src = generate_streets("source", args.n_source, (h, w), seed=0)
    tgt = open_domain("synthetic", "target", (h, w), seed=0, n=args.n_target)  # labels dropped
    ev = generate_streets("target", args.n_eval, (h, w), seed=0, split="val")
    warm_cfg = AdaptConfig(method="source_only", arch=args.arch, pretrained=args.pretrained, iters=args.warmup,
                           batch_size=args.batch_size, image_size=(h, w), seed=seed)  # fmt: skip
    warm = adapt(warm_cfg, src, tgt)
    wm, _ = evaluate_segmenter(warm.model, ev)
    log = [f"  warm start ({args.warmup} steps) target mIoU {100 * wm.miou:.1f}"]
    out: dict = {}
    bank_nbytes = 0
    for method in METHODS:
        cfg = AdaptConfig(method=method, arch=args.arch, pretrained=args.pretrained, iters=args.iters,
                          batch_size=args.batch_size, image_size=(h, w),
                          lr=args.lr, seed=seed, **weights)  # fmt: skip
        r = adapt(cfg, src, tgt, model=copy.deepcopy(warm.model))
        m, _ = evaluate_segmenter(r.model, ev)
        out[method] = {"miou": 100 * m.miou, "iou": (100 * m.iou[m.eval_classes]).tolist(), "spi": r.seconds_per_iter}
        out["classes"] = [CLASS_NAMES[c] for c in m.eval_classes]
        if r.source_bank is not None:
            bank_nbytes = r.source_bank.nbytes() + r.target_bank.nbytes()
        extra = f", pseudo-labels kept {r.history[-1]['pseudo_kept']:.2f}" if "pseudo_kept" in r.history[-1] else ""
        log.append(f"  {method:12s} mIoU {100 * m.miou:5.1f}  {1000 * r.seconds_per_iter:6.0f} ms/step{extra}")
    return out, bank_nbytes, "\n".join(log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--warmup", type=int, default=400, help="source-only warm-start steps per seed")
    ap.add_argument("--iters", type=int, default=300, help="steps per method after the warm start")
    ap.add_argument("--image-size", default="64x128")
    ap.add_argument("--arch", default="deeplabv2_tiny", help="segmenter (deeplabv2_efficientnet_lite0 ...)")
    ap.add_argument("--pretrained", action="store_true", help="start the encoder from packaged ImageNet weights")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--n-source", type=int, default=256)
    ap.add_argument("--n-target", type=int, default=256)
    ap.add_argument("--n-eval", type=int, default=96)
    ap.add_argument("--lr", type=float, default=5e-4, help="AdamW base lr after the warm start (heads 10x)")
    ap.add_argument(
        "--weight-scale",
        type=float,
        default=1.0,
        help="multiplies the paper's MinEnt (0.001/0.0002) and contrastive (0.001) weights, same for all",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads per process")
    ap.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes (use --threads 1)")
    ap.add_argument("--quick", action="store_true", help="1 seed, 60+40 steps, small sets")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_uda.json"))
    args = ap.parse_args()
    print_prerequisites([])
    if args.quick:
        args.seeds, args.warmup, args.iters, args.n_source, args.n_target, args.n_eval = [0], 60, 40, 32, 32, 16
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.image_size.split("x"))
    t0 = time.perf_counter()
    print(f"data: {args.n_source} source, {args.n_target} target (unlabelled), {args.n_eval} target val scenes "
          f"at {h}x{w} (data seed 0); seeds {args.seeds} in {args.jobs} process(es)", flush=True)  # fmt: skip
    s = args.weight_scale
    weights = dict(ent_main=0.001 * s, ent_aux=0.0002 * s, contrast_weight=0.001 * s)
    jobs = [(seed, args, (h, w), weights) for seed in args.seeds]
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(args.jobs, len(jobs))) as pool:
            outs = pool.starmap(run_seed, jobs)
    else:
        outs = [run_seed(*job) for job in jobs]
    for seed, (_, _, log) in zip(args.seeds, outs, strict=True):
        print(f"seed {seed}:\n" + log, flush=True)
    results = {m: [o[0][m]["miou"] for o in outs] for m in METHODS}
    per_class = {m: [o[0][m]["iou"] for o in outs] for m in METHODS}
    spi = {m: [o[0][m]["spi"] for o in outs] for m in METHODS}
    bank_nbytes = outs[0][1]
    classes = outs[0][0]["classes"]
    print(f"\nTarget mIoU (%) on the generated benchmark, {len(args.seeds)} seeds {args.seeds}, "
          f"{args.warmup} warm-up + {args.iters} steps, batch {args.batch_size}+{args.batch_size}, {h}x{w}, "
          f"{args.arch}{' (ImageNet encoder)' if args.pretrained else ''}, loss weights x{s}")  # fmt: skip
    print(
        f"{'method':12s} | {'mean':>5s} | {'std':>4s} | {'min':>5s} | {'max':>5s} | per seed           | ms/step |"
        " paper GTA5->CS (R101)"
    )
    for method in METHODS:
        v = np.asarray(results[method])
        seeds = " ".join(f"{x:5.1f}" for x in v)
        print(f"{method:12s} | {v.mean():5.1f} | {v.std():4.1f} | {v.min():5.1f} | {v.max():5.1f} | {seeds:18s} | "
              f"{1000 * np.mean(spi[method]):7.0f} | {PAPER[method]}")  # fmt: skip
    print("\nper-class IoU (mean over seeds):")
    print(f"{'method':12s} | " + " | ".join(f"{c[:8]:>8s}" for c in classes))
    for method in METHODS:
        pc = np.mean(per_class[method], axis=0)
        print(f"{method:12s} | " + " | ".join(f"{x:8.1f}" for x in pc))
    mean = {k: float(np.mean(v)) for k, v in results.items()}
    spread = max(float(np.max(v) - np.min(v)) for v in results.values())
    ordered = mean["cfcontra"] - mean["minent"] > spread and mean["minent"] - mean["source_only"] > spread
    print(f"\ncfcontra > minent > source_only by more than the largest seed range ({spread:.1f}): "
          f"{'yes' if ordered else 'NO'} (gaps {mean['cfcontra'] - mean['minent']:+.1f}, "
          f"{mean['minent'] - mean['source_only']:+.1f})")  # fmt: skip
    print("\nmemory bank (2 domains x 19 classes x D float32 + flags) vs one batch's per-pixel features:")
    rows = bank_bytes_table(args.arch, create_segmenter(args.arch).feature_dim)
    for name, bank, feats in rows:
        print(f"  {name:22s} bank {2 * bank:7d} B   per-pixel features of the batch {feats:10d} B")
    print(f"  bank bytes in the cfcontra runs: {bank_nbytes}; independent of size and batch: "
          f"{len({b for _, b, _ in rows}) == 1}")  # fmt: skip
    total = time.perf_counter() - t0
    print(f"\ntotal {total / 60:.1f} min on {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"miou": results, "seconds_per_iter": spi, "bank_bytes": bank_nbytes,
                                    "classes": classes, "args": {k: str(v) for k, v in vars(args).items()}},
                                   indent=2))  # fmt: skip


if __name__ == "__main__":
    run(main)
