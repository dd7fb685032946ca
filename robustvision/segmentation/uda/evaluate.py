"""Segmentation evaluation: confusion matrix, per-class IoU, mIoU, confusion-matrix figure and overlays."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from robustvision.segmentation.uda.labels import CLASS_NAMES, IGNORE_INDEX, PALETTE


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``C x C`` pixel counts, rows = ground truth, columns = prediction; ignore pixels skipped."""
    keep = (target != IGNORE_INDEX) & (target >= 0) & (target < num_classes)
    idx = target[keep] * num_classes + pred[keep]
    return torch.bincount(idx.reshape(-1), minlength=num_classes**2).view(num_classes, num_classes).long()


def iou_from_confusion(conf: torch.Tensor) -> np.ndarray:
    """Per-class IoU ``TP / (TP + FP + FN)``; NaN for a class absent from both ground truth and prediction."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    return iou.numpy()


@dataclass
class SegMetrics:
    """Evaluation result.

    Attributes:
        confusion: ``C x C`` counts (rows ground truth).
        iou: per-class IoU (NaN where the class never occurs).
        miou: mean IoU over ``eval_classes``.
        pixel_accuracy: fraction of labelled pixels predicted right.
        eval_classes: classes averaged in ``miou``: those present in the ground truth.
    """

    confusion: np.ndarray
    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    eval_classes: list[int] = field(default_factory=list)

    def as_dict(self, names: tuple[str, ...] = CLASS_NAMES) -> dict:
        return {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "iou": {names[c]: float(self.iou[c]) for c in self.eval_classes},
            "eval_classes": [names[c] for c in self.eval_classes],
        }


def metrics_from_confusion(conf: torch.Tensor, classes: list[int] | None = None) -> SegMetrics:
    """Per-class IoU and mIoU over ``classes`` (default: classes present in the ground truth)."""
    iou = iou_from_confusion(conf)
    present = [c for c in range(conf.shape[0]) if int(conf[c].sum()) > 0]
    classes = present if classes is None else list(classes)
    miou = float(np.nanmean(np.nan_to_num(iou[classes], nan=0.0))) if classes else float("nan")
    total = int(conf.sum())
    acc = float(conf.diag().sum()) / total if total else float("nan")
    return SegMetrics(conf.numpy(), iou, miou, acc, classes)


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module, data: Dataset, batch_size: int = 16, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predictions for every item: ``(images, predicted train ids, ground truth)`` on the CPU."""
    images, preds, masks = [], [], []
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(len(data), start + batch_size))]
        x = torch.stack([a for a, _ in items]).to(device)
        y = torch.stack([b for _, b in items])
        logits = model.predict(x)
        preds.append(logits.argmax(1).cpu())
        images.append(x.cpu())
        masks.append(y)
    return torch.cat(images), torch.cat(preds), torch.cat(masks)


def evaluate_segmenter(
    model: torch.nn.Module,
    data: Dataset,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    classes: list[int] | None = None,
) -> tuple[SegMetrics, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Evaluate a segmenter on a labelled data set.

    Args:
        model: a segmenter with ``predict(images) -> N x C x H x W`` logits and ``num_classes``.
        data: a labelled data set of ``(image, mask)``.
        classes: classes averaged in mIoU (default: those in the ground truth).

    Returns:
        ``(metrics, (images, predictions, masks))``.

    Raises:
        ValueError: the data set is unlabelled or empty.
    """
    if not getattr(data, "labelled", True):
        raise ValueError("evaluation needs a labelled target (synthetic, cityscapes:DIR or gta5:DIR), not photos")
    if len(data) == 0:
        raise ValueError("the evaluation data set is empty")
    images, preds, masks = predict_dataset(model, data, batch_size, device)
    conf = confusion_matrix(preds, masks, model.num_classes)
    return metrics_from_confusion(conf, classes), (images, preds, masks)


def colorize(mask: np.ndarray) -> np.ndarray:
    """Train-id mask -> ``H x W x 3`` uint8 Cityscapes colours (ignore = black)."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[: len(PALETTE)] = np.asarray(PALETTE, dtype=np.uint8)
    return pal[np.asarray(mask).astype(np.int64).clip(0, 255)]


def save_overlays(
    images: torch.Tensor, preds: torch.Tensor, masks: torch.Tensor, out_dir: Path, n: int = 8, alpha: float = 0.5
) -> list[Path]:
    """Write ``n`` PNGs: image | prediction overlay | ground-truth overlay, side by side."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(min(n, images.shape[0])):
        img = (images[i].permute(1, 2, 0).numpy() * 255).astype(np.float32)
        over = [(1 - alpha) * img + alpha * colorize(m[i].numpy()) for m in (preds, masks)]
        panel = np.concatenate([img, *over], axis=1).clip(0, 255).astype(np.uint8)
        path = out_dir / f"overlay_{i:03d}.png"
        Image.fromarray(panel).save(path)
        paths.append(path)
    return paths


def save_confusion_png(metrics: SegMetrics, path: Path, names: tuple[str, ...] = CLASS_NAMES) -> Path:
    """Row-normalised confusion matrix over the evaluated classes as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cls = metrics.eval_classes
    conf = metrics.confusion[np.ix_(cls, cls)].astype(np.float64)
    conf = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    size = 1.2 + 0.45 * len(cls)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(conf, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(cls)), [names[c] for c in cls], rotation=60, ha="right")
    ax.set_yticks(range(len(cls)), [names[c] for c in cls])
    for i in range(len(cls)):
        for j in range(len(cls)):
            ax.text(j, i, f"{conf[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if conf[i, j] < 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"mIoU {100 * metrics.miou:.1f}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
