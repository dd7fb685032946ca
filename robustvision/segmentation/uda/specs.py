"""Turn a domain spec string (``synthetic``, ``gta5:DIR``, ``cityscapes:DIR``, ``photos:DIR``) into a data set."""

from __future__ import annotations

from typing import Literal

import torch

from robustvision.segmentation.uda.data import GTA5, Cityscapes, PhotoFolder, SegmentationData, TensorSegmentation
from robustvision.segmentation.uda.labels import IGNORE_INDEX
from robustvision.segmentation.uda.synthetic import generate_streets

Role = Literal["source", "target", "eval"]
SPEC_KINDS = ("synthetic", "gta5", "cityscapes", "photos")
# Sizes of the generated benchmark's splits (source train, target train, target val).
SYNTHETIC_SIZES: dict[str, int] = {"source": 512, "target": 512, "eval": 128}


def open_domain(
    spec: str,
    role: Role,
    image_size: tuple[int, int],
    seed: int = 0,
    n: int | None = None,
) -> SegmentationData:
    """Open the data set a spec names, for one role.

    Args:
        spec: ``synthetic`` (the generated benchmark), ``gta5:DIR``, ``cityscapes:DIR`` or ``photos:DIR``.
        role: ``source`` (labelled training data), ``target`` (unlabelled training data: labels are dropped) or
            ``eval`` (labelled target data for evaluation).
        image_size: ``(H, W)`` every image is resized to.
        seed: seed of the generated benchmark.
        n: number of generated scenes (default :data:`SYNTHETIC_SIZES`).

    Raises:
        ValueError: an unknown kind, a missing folder part, or a role the kind cannot play.
    """
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in SPEC_KINDS:
        raise ValueError(f"unknown domain {spec!r}: use synthetic, gta5:DIR, cityscapes:DIR or photos:DIR")
    if kind != "synthetic" and not path:
        raise ValueError(f"domain {spec!r} needs a folder: {kind}:DIR")
    if kind == "synthetic":
        domain = "source" if role == "source" else "target"
        split = "val" if role == "eval" else "train"
        data = generate_streets(domain, n or SYNTHETIC_SIZES[role], image_size, seed=seed, split=split)
    elif kind == "gta5":
        data = GTA5(path, image_size=image_size)
    elif kind == "cityscapes":
        # Target training uses every split found (no labels); evaluation uses val when it exists.
        split = None if role == "target" else "val"
        data = Cityscapes(path, split=split, image_size=image_size, labelled=role != "target")
    else:
        if role != "target":
            raise ValueError(f"{spec!r} holds unlabelled photos: it can only be a training target, not {role} data")
        data = PhotoFolder(path, image_size=image_size)
    if role == "target" and isinstance(data, TensorSegmentation):
        # The target is unlabelled during training: drop the generated labels so that nothing can leak.
        data = TensorSegmentation(data.images, torch.full_like(data.masks, IGNORE_INDEX), False, data.name)
    return data
