"""Measuring a camouflage: car accuracy per model, detector AP@0.5, and a naturalness score.

Naturalness (documented in docs/physical-attack.md) combines two measures on the rendered views:

* ``seed_ssim``: SSIM between the car painted with the texture and painted with the seed pattern, over the
  car's box (1 = identical to the natural seed; DAS's human-attention-evasion goal).
* ``saliency_ratio``: bottom-up saliency (spectral residual, Hou & Zhang, CVPR 2007) of the painted region
  relative to the whole image, divided by the same ratio for the seed texture (<= 1: the paint draws no more
  attention than the seed).

``naturalness = seed_ssim - max(0, saliency_ratio - 1)``: higher is more natural.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustvision.physical.data import ViewSet, make_views, render_views
from robustvision.physical.targets import CarDetector
from robustvision.physical.train import box_iou, predict

__all__ = [
    "car_accuracy",
    "average_precision",
    "detector_ap",
    "split_ap",
    "spectral_residual_saliency",
    "naturalness",
    "evaluate_texture",
    "car_class_accuracy",
    "TransferModel",
    "transfer_table",
]


def car_accuracy(model: nn.Module, images: torch.Tensor, car_classes=(1,)) -> float:
    """Fraction of images whose top-1 class is a car class (the DAS ``test.py`` criterion)."""
    pred = predict(model, images).argmax(1)
    return float(torch.isin(pred, torch.as_tensor(list(car_classes))).float().mean())


def average_precision(scores: torch.Tensor, tp: torch.Tensor, num_gt: int) -> float:
    """All-point interpolated AP (VOC 2010+) of detections ranked by ``scores``."""
    if num_gt == 0:
        raise ValueError("AP needs at least one ground-truth box")
    order = torch.argsort(scores, descending=True)
    tp = tp[order].float()
    ctp = torch.cumsum(tp, 0)
    cfp = torch.cumsum(1 - tp, 0)
    recall = ctp / num_gt
    precision = ctp / (ctp + cfp)
    mrec = torch.cat([torch.tensor([0.0]), recall, torch.tensor([1.0])])
    mpre = torch.cat([torch.tensor([0.0]), precision, torch.tensor([0.0])])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = torch.maximum(mpre[i], mpre[i + 1])
    idx = torch.nonzero(mrec[1:] != mrec[:-1]).flatten()
    return float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum())


def detector_ap(
    det: CarDetector, car_images: torch.Tensor, car_boxes: torch.Tensor, negatives: torch.Tensor, iou: float = 0.5
) -> float:
    """AP@``iou`` of the one-box detector on car images (one box each) plus car-free ``negatives``."""
    out_pos = predict(det, car_images)
    out_neg = predict(det, negatives)
    size = car_images.shape[-1]
    tp_pos = box_iou(CarDetector.boxes(out_pos, size), car_boxes) >= iou
    scores = torch.cat([out_pos[:, 0], out_neg[:, 0]])
    tp = torch.cat([tp_pos, torch.zeros(len(out_neg), dtype=torch.bool)])
    return average_precision(scores, tp, len(car_images))


def split_ap(
    det: CarDetector, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, iou: float = 0.5
) -> float:
    """AP@``iou`` of the one-box detector on a rendered split (label 1: a car with its box; 0: no car).

    Detections are ranked in the split's order (ties keep it), as the ``das train`` model cards record them.
    """
    out = predict(det, images)
    cars = labels == 1
    tp = torch.zeros(len(out), dtype=torch.bool)
    tp[cars] = box_iou(CarDetector.boxes(out[cars], images.shape[-1]), boxes[cars]) >= iou
    return average_precision(out[:, 0], tp, int(cars.sum()))


def spectral_residual_saliency(image: torch.Tensor) -> torch.Tensor:
    """Spectral-residual saliency (Hou & Zhang 2007) of ``(3, H, W)`` images, normalised to sum 1: ``(H, W)``."""
    gray = image.float().mean(0)
    spec = torch.fft.fft2(gray)
    log_amp = torch.log(spec.abs() + 1e-8)
    phase = torch.angle(spec)
    residual = log_amp - F.avg_pool2d(log_amp[None, None], 3, 1, 1, count_include_pad=False)[0, 0]
    sal = torch.fft.ifft2(torch.exp(residual + 1j * phase)).abs() ** 2
    k = torch.tensor([1, 4, 6, 4, 1], dtype=sal.dtype)
    k = (k[:, None] * k[None]) / 256
    sal = F.conv2d(sal[None, None], k[None, None], padding=2)[0, 0]
    return sal / sal.sum().clamp_min(1e-12)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    win = min(7, min(a.shape[:2]) // 2 * 2 - 1)
    if win < 3:
        return float(1 - np.abs(a - b).mean())
    return float(structural_similarity(a, b, channel_axis=2, data_range=1.0, win_size=win))


def naturalness(views: ViewSet, images: torch.Tensor, seed_images: torch.Tensor) -> dict[str, float]:
    """``seed_ssim``, ``saliency_ratio`` and the combined ``naturalness`` (module docstring) over the views."""
    ssims, ratios = [], []
    for v, img, ref in zip(views.views, images, seed_images, strict=False):
        x0, y0, x1, y1 = [int(round(float(t))) for t in v.box]
        x0, y0 = max(0, x0), max(0, y0)
        crop = (slice(None), slice(y0, max(y1, y0 + 1)), slice(x0, max(x1, x0 + 1)))
        ssims.append(_ssim(img[crop].permute(1, 2, 0).numpy(), ref[crop].permute(1, 2, 0).numpy()))
        m = v.paint_mask[0]
        if float(m.sum()) < 1e-6:
            continue
        area = float(m.mean())
        s_img = float((spectral_residual_saliency(img) * m).sum()) / area
        s_ref = float((spectral_residual_saliency(ref) * m).sum()) / area
        ratios.append(s_img / max(s_ref, 1e-12))
    ssim = float(np.mean(ssims))
    ratio = float(np.mean(ratios)) if ratios else 1.0
    return {"seed_ssim": ssim, "saliency_ratio": ratio, "naturalness": ssim - max(0.0, ratio - 1.0)}


def evaluate_texture(
    texture: nn.Module | None,
    views: ViewSet,
    classifiers: dict[str, nn.Module],
    *,
    detector: CarDetector | None = None,
    seed_texture: nn.Module | None = None,
    car_classes=(1,),
) -> dict[str, float]:
    """Car accuracy per classifier (``acc/<name>``), ``det_ap50`` and naturalness of ``texture`` on ``views``."""
    with torch.no_grad():
        images = render_views(views, texture)
    out: dict[str, float] = {}
    for name, model in classifiers.items():
        out[f"acc/{name}"] = car_accuracy(model, images, car_classes)
    if detector is not None:
        boxes = torch.stack([v.box for v in views.views])
        out["det_ap50"] = detector_ap(detector, images, boxes, views.backgrounds)
    if seed_texture is not None:
        with torch.no_grad():
            seed_images = render_views(views, seed_texture)
        out.update(naturalness(views, images, seed_images))
    return out


def car_class_accuracy(logits: torch.Tensor, car_classes: Sequence[int], k: int = 5) -> tuple[float, float | None]:
    """Top-1 and top-``k`` car accuracy of ``logits`` (``N x classes``).

    Top-1: the top class is a car class (DAS ``test.py``'s criterion). Top-``k``: a car class is among the ``k``
    highest. A model with ``k`` classes or fewer has every class in its top ``k``, so its top-``k`` figure is
    ``None`` (not measurable) rather than a trivial 100 %.
    """
    cars = torch.as_tensor(list(car_classes), device=logits.device)
    top1 = float(torch.isin(logits.argmax(1), cars).float().mean())
    if logits.shape[1] <= k:
        return top1, None
    topk = logits.topk(k, dim=1).indices
    return top1, float(torch.isin(topk, cars).any(1).float().mean())


@dataclass
class TransferModel:
    """A model measured by :func:`transfer_table`: its input side and the classes that count as "car"."""

    model: nn.Module
    image_size: int
    car_classes: Sequence[int]


def transfer_table(
    mesh,
    textures: dict[str, nn.Module],
    models: dict[str, TransferModel],
    *,
    views: int,
    seed: int,
    backgrounds: list[torch.Tensor],
    k: int = 5,
    on_row=None,
) -> list[dict]:
    """Car accuracy of every texture on every model, each model seeing the same views at its own input size.

    The views are drawn once per image size from a generator seeded with ``seed``; camera draws do not depend
    on the size, so every size shows the same poses over the same background crops. That is checked: a size
    whose cameras differ from the first size's (a view redrawn because it showed no paint) raises
    ``ValueError``.

    Returns:
        one row per model and texture: ``model``, ``image_size``, ``paint``, ``top1`` and ``topk``
        (:func:`car_class_accuracy`) and ``top_classes`` (the five most frequent top-1 classes with their counts).
        ``on_row(row)`` is called as each row is measured.
    """
    from collections import Counter

    rendered: dict[int, dict[str, torch.Tensor]] = {}  # image size -> paint -> images
    cameras = None
    rows = []
    for name, m in models.items():
        size = int(m.image_size)
        if size not in rendered:
            vs = make_views(mesh, views, size, backgrounds, generator=torch.Generator().manual_seed(seed))
            if cameras is not None and vs.cameras != cameras:
                raise ValueError(f"the views at {size} px are not the same poses as at the first size")
            cameras = vs.cameras
            with torch.no_grad():
                rendered[size] = {paint: render_views(vs, tex) for paint, tex in textures.items()}
        for paint, images in rendered[size].items():
            logits = predict(m.model, images, batch_size=16)
            top1, topk = car_class_accuracy(logits, m.car_classes, k)
            common = Counter(logits.argmax(1).tolist()).most_common(5)
            row = {"model": name, "image_size": size, "paint": paint, "top1": top1, "topk": topk, "top_classes": common}
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows
