"""The training loop shared by GBN and its baselines, the data split, and checkpoints of defended models.

One loop serves every method of :mod:`robustvision.defenses.multi_perturbation`, so GBN, AVG, MAX and MSD get
exactly the same data order, epochs, optimiser, schedule, budgets and attack steps. GBN's gate parameters have a
second optimiser of their own (SGD, lr 0.1, momentum 0.8 as in the reference code) stepped on the domain loss;
the gate reads detached features and never enters the classification path, so one backward of the summed losses
is exactly the reference's two separate backward passes.

Budgets ramp linearly from 0 to their full value over ``eps_ramp_epochs`` (the same for every method): short
adversarial runs on MNIST at l-inf 0.3 otherwise often stall at chance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustvision.data import create_dataset
from robustvision.data.base import TensorClassificationDataset
from robustvision.defenses.attacks import NORMS, check_norm
from robustvision.defenses.gbn import (
    REFERENCE_GBN_LAYOUT,
    check_domains,
    convert_to_gbn,
    gate_parameters,
    gbn_layers,
    gbn_spec,
)
from robustvision.defenses.multi_perturbation import (
    AttackSettings,
    StepContext,
    budgets_for,
    create_method,
)
from robustvision.models import create_model
from robustvision.models.checkpoints import load_state, read_card, save_checkpoint
from robustvision.models.wrappers import ImageClassifier
from robustvision.runtime import make_generator, resolve_device, seed_everything


@dataclass
class DefenseConfig:
    """Settings of one defense training run (saved in the checkpoint's model card).

    Attributes:
        method: ``gbn``, ``avg``, ``max``, ``msd``, ``pgd_linf``, ``pgd_l2``, ``pgd_l1`` or ``standard``.
        dataset: data set name (selects the default budgets).
        arch: zoo architecture (``lenet5`` for MNIST, ``resnet18`` for CIFAR-10 images).
        norms: the perturbation types trained against (GBN gets one branch each).
        budgets: eps per norm in [0, 1] pixel units (default: the data set's table).
        epochs, batch_size: the training budget.
        lr, momentum, weight_decay: SGD for every non-gate parameter, cosine-annealed per step.
        gate_lr, gate_momentum: SGD for GBN's gates (reference: 0.1, 0.8), cosine-annealed too.
        eps_ramp_epochs: budgets grow linearly from 0 over this many epochs.
        attack: training attack settings (steps, step size, l1 top-k range, ...).
        clean_branch: GBN only: keep a ``clean`` branch trained on clean images (the reference code has one).
        gbn_layers: GBN only: BatchNorm layers to convert (None: the reference layout for ``lenet5``, every
            BatchNorm layer otherwise).
        seed: seeds the initialisation, data order and attack randomness.
        device: ``cpu``, ``cuda`` or ``auto``.
        max_steps_per_epoch: cap on batches per epoch (quick runs and tests).
    """

    method: str = "gbn"
    dataset: str = "mnist"
    arch: str = "lenet5"
    norms: tuple[str, ...] = NORMS
    budgets: dict[str, float] = field(default_factory=dict)
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    gate_lr: float = 0.1
    gate_momentum: float = 0.8
    eps_ramp_epochs: float = 1.0
    attack: AttackSettings = field(default_factory=AttackSettings)
    clean_branch: bool = True
    gbn_layers: list[str] | None = None
    seed: int = 0
    device: str = "cpu"
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        self.norms = tuple(check_norm(n) for n in self.norms)
        if not self.norms:
            raise ValueError("at least one norm is needed")
        self.budgets = budgets_for(self.dataset, self.budgets)
        create_method(self.method)  # unknown method -> one clear error with close names
        if isinstance(self.attack, dict):
            self.attack = AttackSettings(**self.attack)
        self.attack.l1_k_range = tuple(self.attack.l1_k_range)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.attack.steps < 1:
            raise ValueError(f"attack steps must be >= 1, got {self.attack.steps}")

    @property
    def domains(self) -> tuple[str, ...]:
        """GBN branches: ``clean`` (when kept) and one per norm."""
        return check_domains((("clean",) if self.clean_branch else ()) + tuple(self.norms))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["norms"] = list(self.norms)
        out["attack"]["l1_k_range"] = list(self.attack.l1_k_range)
        return out


@dataclass
class EpochRecord:
    """Mean losses and batch statistics of one epoch, and the held-out clean accuracy (gated mixture)."""

    epoch: int
    loss: float
    gate_loss: float | None
    stats: dict[str, float]
    val_clean_acc: float | None
    seconds: float


def split_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    seed: int = 0,
    train_size: int | None = None,
    test_fraction: float = 0.2,
    source_split: str = "test",
    image_size: int | None = None,
) -> tuple[TensorClassificationDataset, TensorClassificationDataset, dict[str, Any]]:
    """Split one data set split into train and held-out test parts with a fixed seed.

    The shared data holds only MNIST's 10k test set, so GBN's MNIST protocol here splits it 8000 train / 2000 test
    (``test_fraction=0.2``) after a seeded shuffle; the reference code split the same set 8000 / 2000 with
    ``random_split`` (it trained on the 60k training set and used the parts as test / validation).

    Returns:
        ``(train, test, info)`` where ``info`` records the source, seed and sizes (for the model card).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    full = create_dataset(name, split=source_split, root=root, image_size=image_size)
    if not isinstance(full, TensorClassificationDataset):
        images, labels = full.tensors()
        full = TensorClassificationDataset(name, source_split, images, labels, full.classes)
    n = len(full)
    n_train = int(train_size) if train_size is not None else n - int(round(n * test_fraction))
    if not 0 < n_train < n:
        raise ValueError(f"cannot take {n_train} training images out of {n}")
    order = torch.randperm(n, generator=make_generator(seed, "defense-split", name))
    info = {"dataset": name, "source_split": source_split, "seed": seed, "n_train": n_train, "n_test": n - n_train}
    return full.subset(order[:n_train]), full.subset(order[n_train:]), info


def build_model(config: DefenseConfig, *, num_classes: int, in_chans: int, image_size: int) -> ImageClassifier:
    """The zoo model of ``config``, converted to GBN when the method is ``gbn``."""
    model = create_model(config.arch, num_classes=num_classes, in_chans=in_chans, image_size=image_size)
    if config.method == "gbn":
        layout = REFERENCE_GBN_LAYOUT.get(config.arch)
        layers = config.gbn_layers or (list(layout) if layout else None)
        gates = {k: v for k, v in (layout or {}).items() if k in (layers or [])} or None
        convert_to_gbn(model, layers, domains=config.domains, gates=gates)
    return model


def _lr_factor(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / max(1, total)))


@torch.no_grad()
def clean_accuracy(model: nn.Module, dataset, batch_size: int = 256, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``model`` in eval mode (GBN: the gated mixture)."""
    images, labels = dataset.tensors()
    was = model.training
    model.eval()
    try:
        correct = 0
        for i in range(0, len(labels), batch_size):
            out = model(images[i : i + batch_size].to(device))
            correct += int((out.argmax(1).cpu() == labels[i : i + batch_size]).sum())
    finally:
        model.train(was)
    return correct / max(1, len(labels))


def train_defense(
    model: nn.Module,
    train_set,
    config: DefenseConfig,
    val_set=None,
    callback: Callable[[int, int, dict[str, float]], None] | None = None,
) -> list[EpochRecord]:
    """Train ``model`` with ``config.method``; returns one record per epoch.

    Args:
        model: a zoo model (converted to GBN for ``gbn``; see :func:`build_model`).
        train_set: a data set with ``tensors()``.
        config: the run's settings.
        val_set: optional held-out set for the per-epoch clean accuracy.
        callback: called after every step with ``(step, total_steps, stats)`` (progress bars).

    Raises:
        ValueError: a GBN method on a model without GBN layers (or the reverse), mismatched domains.
        FloatingPointError: the loss became NaN or infinite.
    """
    method = create_method(config.method)
    norms = method.norms(config.norms)
    has_gbn = bool(gbn_layers(model))
    if method.uses_gate and not has_gbn:
        raise ValueError("method 'gbn' needs a model converted with convert_to_gbn (see build_model)")
    if has_gbn and not method.uses_gate:
        raise ValueError(f"method {config.method!r} cannot train a GBN model (it has no domain routing)")
    device = resolve_device(config.device)
    seed_everything(config.seed)
    model.to(device)
    images, labels = train_set.tensors()
    n = len(labels)
    steps_per_epoch = math.ceil(n / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, int(config.max_steps_per_epoch))
    total = steps_per_epoch * config.epochs
    gate_ids = {id(p) for p in gate_parameters(model)}
    main_params = [p for p in model.parameters() if id(p) not in gate_ids]
    opt = torch.optim.SGD(main_params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    gate_opt = (
        torch.optim.SGD(gate_parameters(model), lr=config.gate_lr, momentum=config.gate_momentum) if gate_ids else None
    )
    generator = make_generator(config.seed, "defense-train", config.method)
    ramp_steps = max(1, int(round(config.eps_ramp_epochs * steps_per_epoch)))
    history: list[EpochRecord] = []
    step = 0
    for epoch in range(config.epochs):
        start = time.time()
        order = torch.randperm(n, generator=generator)
        sums: dict[str, float] = {}
        loss_sum, gate_sum, count = 0.0, 0.0, 0
        model.train()
        for b in range(steps_per_epoch):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            x, y = images[idx].to(device), labels[idx].to(device)
            factor = min(1.0, (step + 1) / ramp_steps) if config.eps_ramp_epochs > 0 else 1.0
            ctx = StepContext(
                budgets={k: v * factor for k, v in config.budgets.items()},
                attack=config.attack,
                generator=generator,
                norms=norms,
            )
            lr_f = _lr_factor(step, total)
            for g in opt.param_groups:
                g["lr"] = config.lr * lr_f
            model.train()
            out = method.losses(model, x, y, ctx)
            loss = out.classification + (out.gate if out.gate is not None else 0.0)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{config.method}: the loss became {float(loss)} at step {step}")
            opt.zero_grad(set_to_none=True)
            if gate_opt is not None:
                for g in gate_opt.param_groups:
                    g["lr"] = config.gate_lr * lr_f
                gate_opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if gate_opt is not None:
                gate_opt.step()
            loss_sum += float(out.classification.detach())
            gate_sum += float(out.gate.detach()) if out.gate is not None else 0.0
            count += 1
            for k, v in out.stats.items():
                sums[k] = sums.get(k, 0.0) + v
            step += 1
            if callback is not None:
                callback(step, total, {"loss": float(out.classification.detach()), **out.stats})
        val = clean_accuracy(model, val_set, device=device) if val_set is not None else None
        history.append(
            EpochRecord(
                epoch=epoch + 1,
                loss=loss_sum / count,
                gate_loss=gate_sum / count if gate_opt is not None else None,
                stats={k: v / count for k, v in sums.items()},
                val_clean_acc=val,
                seconds=time.time() - start,
            )
        )
    model.eval()
    return history


def save_defense(
    model: ImageClassifier,
    path: str | Path,
    config: DefenseConfig,
    history: Sequence[EpochRecord] = (),
    data: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a defended model (safetensors + model card with method, budgets, GBN layout, history, data split)."""
    card = {
        "technique": config.method,
        "defense": config.to_dict(),
        "gbn": gbn_spec(model) if gbn_layers(model) else None,
        "history": [asdict(r) for r in history],
        "data": data or {},
        **(extra or {}),
    }
    return save_checkpoint(model, path, card)


def load_defense(
    path: str | Path, *, domains: Sequence[str] | None = None, device: str | torch.device = "cpu"
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Rebuild a defended model from its checkpoint (re-converting GBN layers from the card) in eval mode.

    Args:
        path: the ``.safetensors`` file written by :func:`save_defense`.
        domains: when given, must equal the checkpoint's GBN domain list (in order).
        device: where to put the model.

    Raises:
        ValueError: a domain list that does not match the checkpoint, a card without GBN for ``domains``, or
            weights that do not fit the architecture.
        FileNotFoundError: missing checkpoint or card.
    """
    card = read_card(path)
    state = load_state(path)
    for key in ("arch", "num_classes", "image_size"):
        if key not in card:
            raise ValueError(f"model card of {str(path)!r} lacks {key!r}; was it written by save_defense?")
    model = create_model(
        card["arch"],
        num_classes=card["num_classes"],
        image_size=card["image_size"],
        in_chans=card.get("in_chans", 3),
        mean=card.get("mean"),
        std=card.get("std"),
    )
    spec = card.get("gbn")
    if spec:
        trained = tuple(spec["domains"])
        if domains is not None and tuple(domains) != trained:
            raise ValueError(
                f"domain list {tuple(domains)} does not match the checkpoint's GBN branches {trained} "
                f"({str(path)!r}); a GBN model can only be used with the domains it was trained with"
            )
        convert_to_gbn(
            model, spec["layers"], domains=trained, gates=spec.get("gates"), gate_hidden=spec.get("gate_hidden", 512)
        )
    elif domains is not None:
        raise ValueError(f"checkpoint {str(path)!r} has no GBN layers, so it takes no domain list")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match its card ({card['arch']}, gbn={bool(spec)}): "
            f"{len(missing)} missing and {len(unexpected)} unexpected tensors (e.g. {(missing + unexpected)[:3]})"
        )
    return model.to(device).eval(), card
