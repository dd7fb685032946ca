"""Interactive segmentation benchmark: NoC@85/90, IoU@1/3/5 and per-click latency on GrabCut and DUTS-val.

Runs EdgeFlow, the RITM-style ablation (``--no-edge-flow``), OpenCV GrabCut and the scikit-image random
walker through the same RITM simulated user (20 clicks max, threshold 0.49) on

- GrabCut: the images in ``../shared/data/grabcut`` (20 of the 50: the BSDS ones; ~480x320);
- DUTS-val (with ``--duts-root``): the 500 DUTS-TR images held out from training
  (:func:`robustvision.segmentation.interactive.data.duts_split`, seed 0), or their first ``--duts-limit``
  names in sorted order,

and prints our figures beside the published ones. Per-click latency is the wall time of ``predict`` after
``set_image``, measured inside the NoC loop on this machine's CPU with ``--threads`` torch threads.

Usage:
    python benchmarks/iseg.py                 # GrabCut, all 20 images, shipped checkpoints
    python benchmarks/iseg.py --quick         # first 5 images (and 5 DUTS-val images with --duts-root)
    python benchmarks/iseg.py --duts-root ../data/DUTS-TR --duts-limit 100 --sets grabcut,duts_val
    python benchmarks/iseg.py --edgeflow ckpt.safetensors --noedge ckpt2.safetensors --json out.json
    python benchmarks/iseg.py --predictors edgeflow,edgeflow_noedge --plain-beside   # fast path vs plain network

``--plain-beside`` also runs each learned predictor with ``optimize=False`` (the network as trained, batch norms
unfolded) on the same images, one image after the other, so the two latency figures share the machine's load;
the NoC figures of the pair must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import yaml
from _support import missing_data, print_prerequisites, run

from robustvision.runtime import shared_data_dir
from robustvision.segmentation.interactive import create_predictor, evaluate_sample
from robustvision.segmentation.interactive.data import load_duts_val, load_grabcut
from robustvision.segmentation.interactive.evaluate import summarize
from robustvision.segmentation.interactive.predictor import WEIGHTS_DIR

# Published GrabCut NoC (COCO+LVIS training, 230 epochs x 30k samples on GPUs; see shared notes).
PUBLISHED = {
    "EdgeFlow HRNet18 (C+L) [paper / ClickAttention table]": {"NoC@85": "1.60 (unverified)", "NoC@90": "1.72"},
    "RITM HRNet18 IT-M (C+L) [RITM README]": {"NoC@85": "1.42", "NoC@90": "1.54"},
    "RITM HRNet18 IT-M (SBD) [RITM README]": {"NoC@85": "1.76", "NoC@90": "2.04"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="GrabCut root (default ../shared/data/grabcut)")
    ap.add_argument("--duts-root", default=None, help="DUTS-TR folder (DUTS-TR-Image/ + DUTS-TR-Mask/) for DUTS-val")
    ap.add_argument("--duts-limit", type=int, default=100, help="DUTS-val images (of the 500 held out; 0 = all)")
    ap.add_argument(
        "--duts-start", type=int, default=0, help="first DUTS-val name used (settings were chosen on 300-399)"
    )
    ap.add_argument(
        "--sets",
        default=None,
        help="grabcut, duts_val or both (default: grabcut, plus duts_val when --duts-root is given)",
    )
    ap.add_argument("--quick", action="store_true", help="only the first 5 images")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--edgeflow", default=None, help="EdgeFlow checkpoint (default: shipped)")
    ap.add_argument("--noedge", default=None, help="ablation checkpoint (default: shipped)")
    ap.add_argument("--predictors", default="edgeflow,edgeflow_noedge,grabcut,random_walker")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    ap.add_argument(
        "--plain-beside",
        action="store_true",
        help="also run the learned predictors with optimize=false, interleaved per image (same-run latency peer)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an inference setting of the learned predictors, e.g. --set with_flip=false (repeatable)",
    )
    args = ap.parse_args()

    if args.threads < 1 or args.max_clicks < 1 or args.duts_limit < 0 or (args.limit is not None and args.limit < 1):
        ap.error("--threads, --max-clicks and --limit must be >= 1, --duts-limit >= 0")
    torch.set_num_threads(args.threads)
    limit = 5 if args.quick else args.limit
    sets = (args.sets or ("grabcut,duts_val" if args.duts_root else "grabcut")).split(",")
    unknown = sorted(set(sets) - {"grabcut", "duts_val"})
    if unknown:
        ap.error(f"unknown --sets {unknown}; known: grabcut, duts_val")
    if "duts_val" in sets and not args.duts_root:
        ap.error("--sets duts_val needs --duts-root (the DUTS-TR folder)")
    print_prerequisites(
        [],
        data=(["GrabCut (data_GT/ + boundary_GT/): ../shared/data/grabcut or --root"] if "grabcut" in sets else [])
        + (
            ["DUTS-TR (aviroshkovan/DUTS-TR @ e0837529), its 500 held-out names: --duts-root"]
            if "duts_val" in sets
            else []
        ),
    )
    data: dict[str, list] = {}
    if "grabcut" in sets:
        if args.root is None:
            shared = shared_data_dir()
            if shared is None or not (shared / "grabcut" / "data_GT").is_dir():
                missing_data(
                    "the GrabCut evaluation set (../shared/data/grabcut: data_GT/ + boundary_GT/)",
                    "https://github.com/flandrade/dataset-interactive-algorithms (RITM/f-BRS layout)",
                    "--root DIR",
                )
        data["grabcut"] = load_grabcut(args.root, limit=limit)
    if "duts_val" in sets:
        duts_limit = 5 if args.quick else (args.duts_limit or None)
        try:
            data["duts_val"] = load_duts_val(args.duts_root, limit=duts_limit, start=args.duts_start)
        except ValueError as err:
            ap.error(str(err))
    checkpoints = {"edgeflow": args.edgeflow, "edgeflow_noedge": args.noedge}
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set wants KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    rows, cards = [], {}
    predictors = []
    for name in args.predictors.split(","):
        extra = overrides if name in checkpoints else {}
        try:
            p = create_predictor(name, checkpoint=checkpoints.get(name), **extra)
        except (TypeError, ValueError) as err:
            ap.error(str(err))
        if name in checkpoints:
            ck = Path(checkpoints[name]) if checkpoints[name] else WEIGHTS_DIR / f"{name}.safetensors"
            card = json.loads(ck.with_suffix(".json").read_text())
            cards[name] = {k: card.get(k) for k in ("steps_done", "wall_seconds", "command", "seed")}
        predictors.append((name, p))
        if args.plain_beside and name in checkpoints:
            plain = create_predictor(name, checkpoint=checkpoints.get(name), **{**overrides, "optimize": False})
            predictors.append((f"{name} (plain)", plain))
    for set_name, samples in data.items():
        # One image at a time through every predictor: the load of a shared machine then weighs on all alike.
        results: dict[str, list] = {name: [] for name, _ in predictors}
        seconds = dict.fromkeys(results, 0.0)
        for sample in samples:
            for name, p in predictors:
                t0 = time.time()
                results[name].append(
                    evaluate_sample(
                        p, sample.image, sample.mask, name=sample.name, max_clicks=args.max_clicks, min_clicks=5
                    )  # fmt: skip
                )
                seconds[name] += time.time() - t0
        for name, _ in predictors:
            s = summarize(name, results[name], max_clicks=args.max_clicks)
            row = {"set": set_name, **s.as_row(), "eval_seconds": round(seconds[name], 1)}
            rows.append(row)
            print(f"done {name} on {set_name} in {row['eval_seconds']} s", flush=True)
            plain = results.get(f"{name} (plain)")
            if plain is not None:
                # the simulated user follows the masks, so equal IoU curves mean equal masks click after click
                diff = max(max(abs(a - b) for a, b in zip(x.ious, y.ious, strict=False)) for x, y in
                           zip(results[name], plain, strict=True))  # fmt: skip
                same = all(len(x.ious) == len(y.ious) for x, y in zip(results[name], plain, strict=True))
                print(f"  {name} vs plain: max |IoU difference| over all clicks {diff:.2e}, same click counts: {same}")

    print()
    for set_name, samples in data.items():
        sizes = sorted({x.image.shape[1] * x.image.shape[0] for x in samples})
        label = "GrabCut" if set_name == "grabcut" else "DUTS-val (DUTS-TR held-out split, seed 0)"
        print(f"{label}: {len(samples)} images, {sizes[0]}-{sizes[-1]} px each")
    print(f"RITM clicker, max {args.max_clicks} clicks, torch threads {args.threads},")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,")
    if overrides:
        print(f"inference overrides for the learned predictors: {overrides}")
    print(f"load average at the end {tuple(round(x, 1) for x in os.getloadavg())}")
    print()
    cols = ["set", "predictor", "NoC@85", "NoC@90", ">=max@90", "IoU@1", "IoU@3", "IoU@5", "click_ms_median",
            "click_ms_p95", "set_image_ms"]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    print()
    print("Published (GrabCut, all 50 images, GPU-trained on COCO+LVIS or SBD):")
    for k, v in PUBLISHED.items():
        print(f"  {k}: NoC@85 {v['NoC@85']}, NoC@90 {v['NoC@90']}")
    for name, c in cards.items():
        print(f"  ours {name}: {c['steps_done']} steps in {c['wall_seconds']} s, seed {c['seed']}: {c['command']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "checkpoints": cards}, indent=2) + "\n")


if __name__ == "__main__":
    run(main)
