"""Training the DAS targets (car classifiers, car detector) on the rendered car data set.

A compact AdamW + cosine recipe with flip augmentation, the same for every family: the data are small uint8
tensors in memory. It runs through :class:`robustvision.training.Trainer` with a ``loss_fn`` and a ``prepare``
hook, set so that the published targets come out bit for bit as before: one generator seeded with the run's seed
draws the data order, flips and shifts in turn, every parameter gets weight decay, the last batch is kept, and the
warm-up is ``(step + 1) / warm`` over the first 5 % of the steps, then a cosine stepped per batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustvision.fileio import atomic_write_text
from robustvision.physical.targets import CarDetector, build_classifier, build_detector, save_model
from robustvision.training.config import TrainConfig
from robustvision.training.trainer import LossFn, PrepareFn, TensorPairs, Trainer

__all__ = ["TargetTrainConfig", "train_classifier", "train_detector", "train_targets", "predict", "box_iou"]


@dataclass
class TargetTrainConfig:
    """Training settings for a DAS target.

    Attributes:
        epochs: passes over the data.
        batch_size: images per step.
        lr: AdamW peak learning rate (cosine decay, 1 warm-up epoch fraction).
        weight_decay: AdamW weight decay.
        shift: classifiers only: random translation by up to this many pixels (reflect-padded), on top of the
            horizontal flip (0: flip only).
        seed: seeds the shuffling and initialisation.
        device: where to train.
    """

    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    shift: int = 0
    seed: int = 0
    device: str = "cpu"


def _recipe(config: TargetTrainConfig) -> TrainConfig:
    """The :class:`~robustvision.training.TrainConfig` the Trainer runs under (its optimiser and schedule are ours)."""
    fields = {"lr": config.lr, "weight_decay": config.weight_decay, "epochs": config.epochs, "seed": config.seed}
    return TrainConfig.for_hooks(optimizer="adamw", batch_size=config.batch_size, device=config.device, **fields)


def _adamw(config: TargetTrainConfig) -> Callable[[nn.Module], list[torch.optim.Optimizer]]:
    """AdamW with weight decay on every parameter (biases and norm scales included)."""
    return lambda model: [torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)]


def _schedule(trainer: Trainer) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """Warm-up ``(step + 1) / warm`` over the first 5 % of the steps, then cosine, stepped per batch."""
    total = trainer.total_steps
    warm = max(1, total // 20)
    return [
        torch.optim.lr_scheduler.LambdaLR(
            trainer.optimizer,
            lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))),
        )
    ]


def _fit(
    model: nn.Module,
    data: TensorPairs,
    config: TargetTrainConfig,
    loss_fn: LossFn,
    prepare: PrepareFn,
    progress: Callable[[int, int, float], None] | None,
) -> Trainer:
    """Run the target recipe through the Trainer; the model is left in eval mode.

    One generator seeded with ``config.seed`` draws the data order, flips and shifts in turn; the last batch is kept.
    """
    trainer = Trainer(
        model,
        data,
        None,
        _recipe(config),
        technique="das_target",
        loss_fn=loss_fn,
        generator=torch.Generator().manual_seed(config.seed),
        drop_last=False,
        optimizers=_adamw(config),
        schedulers=_schedule,
        prepare=prepare,
    )
    if progress is not None:
        trainer.add_callback("on_batch_end", lambda t: progress(t.step, t.total_steps, t.last_loss))
    try:
        trainer.fit()
    finally:
        model.eval()
    return trainer


def _augment(
    x: torch.Tensor, boxes: torch.Tensor | None, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    if boxes is not None:
        size = x.shape[-1]
        fb = boxes.clone()
        fb[:, 0], fb[:, 2] = size - boxes[:, 2], size - boxes[:, 0]
        boxes = torch.where(flip.view(-1, 1).to(boxes.device), fb, boxes)
    return x, boxes


def _shift(x: torch.Tensor, pixels: int, g: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``pixels`` in x and y (reflect padding keeps the borders natural)."""
    if pixels <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, mode="reflect")
    dy = torch.randint(2 * pixels + 1, (n,), generator=g).tolist()
    dx = torch.randint(2 * pixels + 1, (n,), generator=g).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TargetTrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` on uint8 ``images`` ``(N, 3, S, S)`` with int64 ``labels``; returns final train loss/acc.

    The loss and accuracy are the means over the last epoch.
    """
    totals = {"loss": 0.0, "correct": 0.0, "seen": 0.0}

    def prepare(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
        x = x.to(trainer.device).float() / 255
        x, _ = _augment(x, None, g)
        return _shift(x, config.shift, g), y.to(trainer.device)

    def loss_fn(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
        if trainer.step % trainer.steps_per_epoch == 0:
            totals.update(loss=0.0, correct=0.0, seen=0.0)
        logits = trainer.model(x)
        loss = F.cross_entropy(logits, y)
        totals["loss"] += float(loss.detach()) * len(y)
        totals["correct"] += float((logits.argmax(1) == y).sum())
        totals["seen"] += len(y)
        return loss, logits

    _fit(model, TensorPairs(images, labels), config, loss_fn, prepare, progress)
    seen = max(totals["seen"], 1)
    return {"train_loss": totals["loss"] / seen, "train_acc": totals["correct"] / seen}


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of boxes ``(N, 4)`` ``x0, y0, x1, y1``."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = lambda t: (t[:, 2:] - t[:, :2]).clamp(min=0).prod(1)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp_min(1e-8)


def train_detector(
    det: CarDetector,
    images: torch.Tensor,
    labels: torch.Tensor,
    boxes: torch.Tensor,
    config: TargetTrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """Train the one-box detector: BCE on objectness, L1 + (1 - IoU) on the box of car images.

    Returns the loss of the last step.
    """
    size = images.shape[-1]
    # one target row per image: objectness, then the box x0, y0, x1, y1
    targets = torch.cat([labels.float()[:, None], boxes.float()], 1)

    def prepare(trainer: Trainer, x: torch.Tensor, t: torch.Tensor, g: torch.Generator):
        x = x.to(trainer.device).float() / 255
        t = t.to(trainer.device)
        x, bx = _augment(x, t[:, 1:], g)
        return x, torch.cat([t[:, :1], bx], 1)

    def loss_fn(trainer: Trainer, x: torch.Tensor, t: torch.Tensor, g: torch.Generator):
        y, bx = t[:, 0], t[:, 1:]
        out = trainer.model(x)
        loss = F.binary_cross_entropy_with_logits(out[:, 0], y)
        pos = y > 0
        if pos.any():
            pred = CarDetector.boxes(out[pos], size)
            gt = bx[pos]
            loss = loss + F.l1_loss(pred / size, gt / size) * 5 + (1 - box_iou(pred, gt)).mean()
        return loss, None

    trainer = _fit(det, TensorPairs(images, targets), config, loss_fn, prepare, progress)
    return {"train_loss": trainer.last_loss}


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Model outputs for float [0, 1] (or uint8) images, in batches, in eval mode."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    outs = []
    try:
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(dev)
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            outs.append(model(x).cpu())
    finally:
        model.train(was)
    return torch.cat(outs) if outs else torch.zeros(0)


def train_targets(
    data: str | Path,
    models: Sequence[str],
    config: TargetTrainConfig,
    *,
    detector: bool = True,
    extra_data: Sequence[str | Path] = (),
    progress: Callable[[str, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train the DAS targets on ``data/train.pt``, measure them on ``data/test.pt`` and save them with their cards.

    Writes ``data/models/NAME.safetensors`` (+ ``.json`` model card) per classifier, ``detector.safetensors`` and
    ``summary.json``. Each model's initialisation is seeded with ``config.seed`` and its data order and
    augmentation come from a generator seeded with it, so a rerun gives the same weights.

    Args:
        data: the folder ``robustvision das dataset`` wrote.
        models: classifier architectures (see :func:`~robustvision.physical.targets.build_classifier`).
        config: the training recipe (``device`` already resolved).
        detector: also train the one-box car detector.
        extra_data: further ``.pt`` splits appended to the training set.
        progress: called as ``progress(name, step, total)`` after each step.
        log: called with one line per trained model.

    Returns:
        ``{name: figures}``: test accuracy and car accuracy by paint for classifiers, AP@0.5 for the detector.
    """
    from robustvision.physical.data import load_split
    from robustvision.physical.evaluate import car_accuracy, split_ap

    data = Path(data)
    tr, te = load_split(data, "train"), load_split(data, "test")
    for extra in [str(e).strip() for e in extra_data if str(e).strip()]:
        if not extra.endswith(".pt"):
            raise ValueError(f"--extra-data {extra}: expected a .pt file from `das dataset`")
        more = load_split(Path(extra).parent, Path(extra).stem)
        if more["images"].shape[1:] != tr["images"].shape[1:]:
            raise ValueError(f"{extra}: images {tuple(more['images'].shape[1:])} differ from the training set's")
        for k in ("images", "labels", "boxes", "painted"):
            tr[k] = torch.cat([tr[k], more[k]])
    size = tr["images"].shape[-1]
    recipe = {
        "epochs": config.epochs,
        "lr": config.lr,
        "shift": config.shift,
        "seed": config.seed,
        "train_images": len(tr["images"]),
    }
    say = log or (lambda line: None)
    summary: dict[str, dict[str, Any]] = {}
    for name in models:
        model = build_classifier(name, 2, size, seed=config.seed)
        stats = train_classifier(
            model,
            tr["images"],
            tr["labels"],
            config,
            progress=None if progress is None else lambda s, t, loss, n=name: progress(n, s, t),
        )
        model.cpu()
        acc = float((predict(model, te["images"]).argmax(1) == te["labels"]).float().mean())
        cars = te["labels"] == 1
        painted = te["painted"] & cars
        acc_orig = car_accuracy(model, te["images"][cars & ~te["painted"]])
        acc_rand = car_accuracy(model, te["images"][painted])
        row = {"test_acc": acc, "car_acc_original_paint": acc_orig, "car_acc_random_paint": acc_rand, **stats}
        save_model(
            model,
            data / "models" / f"{name}.safetensors",
            {
                "kind": "classifier",
                "arch": name,
                "family": model.family,
                "num_classes": 2,
                "image_size": size,
                "classes": ["not_car", "car"],
                **row,
                "recipe": recipe,
            },
        )
        summary[name] = row
        say(f"{name}: test acc {acc:.3f}, car acc original {acc_orig:.3f} / random paint {acc_rand:.3f}")
    if detector:
        det = build_detector(size, seed=config.seed)
        train_detector(
            det,
            tr["images"],
            tr["labels"],
            tr["boxes"],
            config,
            progress=None if progress is None else lambda s, t, loss: progress("detector", s, t),
        )
        det.cpu()
        ap = split_ap(det, te["images"], te["labels"], te["boxes"])
        save_model(
            det,
            data / "models" / "detector.safetensors",
            {"kind": "detector", "arch": "das_detector", "image_size": size, "test_ap50": ap},
        )
        summary["detector"] = {"test_ap50": ap}
        say(f"detector: test AP@0.5 {ap:.3f}")
    (data / "models").mkdir(parents=True, exist_ok=True)
    atomic_write_text(data / "models" / "summary.json", json.dumps(summary, indent=2))
    return summary
