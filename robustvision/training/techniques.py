"""Training techniques as one-switch ablations on one base recipe (RobustART, arXiv:2109.05211 §1.5).

A technique is data: the :class:`TrainConfig` fields it changes (and the constructor arguments a model needs, for
``drop_path``). The :class:`~robustvision.training.trainer.Trainer` reads only the config, so a technique's whole
effect is visible in the config saved with its checkpoint, and the same switch can be set by hand.

The loss functions below implement the switches that change the training step:

- mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019): convex image/label mixing, Beta(alpha, alpha);
- AugMix (Hendrycks et al., 2020): two augmented views mixed from random chains, Jensen-Shannon consistency;
- PGD-AT (Madry et al., 2018): train on l-inf PGD examples from ``robustvision.noises.adversarial.PGD``;
- TRADES (Zhang et al., 2019): ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` with ``x'`` maximising the KL term.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustvision.noises.adversarial import PGD, attack_mode, clip_to_box_and_ball
from robustvision.registry import Registry
from robustvision.training.config import TrainConfig


@dataclass(frozen=True)
class Technique:
    """One switch on the base recipe.

    Attributes:
        name: registry name.
        changes: :class:`TrainConfig` fields the switch sets.
        model_kwargs: constructor arguments the model must be built with (``create_model(name, **model_kwargs)``).
        summary: what the switch changes, for docs and ``robustvision train --help``.
        reference: the paper.
    """

    name: str
    changes: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    reference: str = ""

    def apply(self, config: TrainConfig) -> TrainConfig:
        """The config with this technique's switch set."""
        return config.replace(**self.changes)


TECHNIQUES: Registry[Technique] = Registry("technique")


def _add(name: str, summary: str, reference: str = "", model_kwargs: dict | None = None, **changes: Any) -> None:
    tech = Technique(name, dict(changes), dict(model_kwargs or {}), summary, reference)
    TECHNIQUES.add(name, lambda tech=tech: tech, summary=summary)


_add("standard", "the base recipe: SGD + Nesterov, warm-up + cosine, weight decay, random translation")
_add("label_smoothing", "cross-entropy with label smoothing 0.1", "Szegedy et al., 2016", label_smoothing=0.1)
_add("ema", "evaluate and save an exponential moving average of the weights (decay 0.999)", "Polyak", ema_decay=0.999)
_add("mixup", "mixup of image pairs and their labels, Beta(0.2, 0.2)", "Zhang et al., 2018", mixup_alpha=0.2)
_add(
    "cutmix",
    "CutMix: paste a box of another image, mix labels by area, Beta(1, 1)",
    "Yun et al., 2019",
    cutmix_alpha=1.0,
)
_add("augmix", "AugMix views + Jensen-Shannon consistency (weight 12)", "Hendrycks et al., 2020", augmix=True)
_add(
    "adamw",
    "AdamW instead of SGD, with its usual lr 1e-3 and decoupled weight decay 0.05",
    "Loshchilov & Hutter, 2019",
    optimizer="adamw",
    lr=1e-3,
    weight_decay=0.05,
)
_add(
    "drop_path",
    "stochastic depth 0.1 (the model is built with drop_path_rate=0.1)",
    "Huang et al., 2016",
    model_kwargs={"drop_path_rate": 0.1},
    drop_path_rate=0.1,
)
_add(
    "pgd_at",
    "train on PGD-linf examples (eps 8/255, 5 steps of 2.5/255, random start)",
    "Madry et al., 2018",
    adv_training="pgd",
)
_add(
    "trades",
    "TRADES: CE + 6 x KL(f(x) || f(x')), x' maximises the KL in the eps 8/255 l-inf ball",
    "Zhang et al., 2019",
    adv_training="trades",
    trades_beta=6.0,
)


def create_technique(name: str) -> Technique:
    """The technique registered under ``name`` (unknown names suggest the closest ones)."""
    return TECHNIQUES.create(name)


def list_techniques(pattern: str = "*") -> list[str]:
    return TECHNIQUES.list(pattern)


def check_model_for_technique(model: nn.Module, technique: Technique) -> None:
    """A clear error when ``model`` was not built the way ``technique`` needs (drop path)."""
    rate = technique.model_kwargs.get("drop_path_rate")
    if rate:
        probs = [getattr(m, "drop_prob", 0.0) for m in model.modules() if type(m).__name__ == "DropPath"]
        if not any(p > 0 for p in probs):
            raise ValueError(
                f"technique {technique.name!r} needs a model built with drop_path_rate={rate} "
                f"(create_model(name, drop_path_rate={rate})); this model has no active DropPath layers"
            )


# ---- batch transforms (every draw comes from the generator it is given) ----------------------------------------


def _numpy_rng(generator: torch.Generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))


def random_translate(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``pixels`` in x and y (zero fill): pad, then a random crop per sample."""
    if pixels <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (pixels, pixels, pixels, pixels))
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=generator).to(images.device)
    # One gather over the flattened padded images: index of output pixel (y, x) is (y + dy) * W + (x + dx).
    width = w + 2 * pixels
    grid = (torch.arange(h, device=images.device)[:, None] * width + torch.arange(w, device=images.device)).view(1, -1)
    index = grid + offsets[:, :1] * width + offsets[:, 1:]
    flat = padded.flatten(2).gather(2, index[:, None, :].expand(-1, images.shape[1], -1))
    return flat.view_as(images)


def mixup(images: torch.Tensor, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mix each image with a permuted partner: ``lam x + (1 - lam) x[perm]``; returns (images, perm, lam)."""
    lam = float(_numpy_rng(generator).beta(alpha, alpha))
    perm = torch.randperm(images.shape[0], generator=generator).to(images.device)
    return lam * images + (1 - lam) * images[perm], perm, lam


def cutmix(images: torch.Tensor, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Paste a random box of a permuted partner; ``lam`` is the kept area fraction (after clipping the box)."""
    lam = float(_numpy_rng(generator).beta(alpha, alpha))
    perm = torch.randperm(images.shape[0], generator=generator).to(images.device)
    h, w = images.shape[-2:]
    cut = math.sqrt(1 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = (int(v) for v in torch.randint(0, 10**9, (2,), generator=generator))
    cy, cx = cy % h, cx % w
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = images.clone()
    out[:, :, y0:y1, x0:x1] = images[perm][:, :, y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return out, perm, lam


def augmix_view(images: torch.Tensor, severity: int, generator: torch.Generator, chunk: int = 8) -> torch.Tensor:
    """One AugMix view (torchvision's AugMix without the ops that overlap ImageNet-C, as in the paper).

    torchvision draws one operation chain per call, so chunks of ``chunk`` images get their own chains; the draws
    come from a fork of the global RNG seeded from ``generator``, so the view is reproducible.
    """
    from torchvision.transforms import v2

    aug = v2.AugMix(severity=severity, all_ops=False)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    devices = [images.device] if images.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return torch.cat([aug(part) for part in images.split(chunk)]).clamp_(0, 1)


# ---- losses ------------------------------------------------------------------------------------------------------


def _ce(logits: torch.Tensor, labels: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)


def jensen_shannon(*logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between the softmax outputs of several views (AugMix's consistency loss)."""
    probs = [F.softmax(z.float(), dim=1) for z in logits]
    mean = torch.clamp(sum(probs) / len(probs), 1e-7, 1).log()
    return sum(F.kl_div(mean, p, reduction="batchmean") for p in probs) / len(probs)


def trades_adversary(
    raw_model: nn.Module, images: torch.Tensor, config: TrainConfig, generator: torch.Generator
) -> torch.Tensor:
    """TRADES' inner maximisation: l-inf steps ascending ``KL(f(x) || f(x'))`` from ``x + 0.001 N(0, 1)``."""
    with attack_mode(raw_model):
        with torch.no_grad():
            p_clean = F.softmax(raw_model(images).float(), dim=1)
        noise = torch.randn(images.shape, generator=generator).to(images.device)
        adv = (images + 0.001 * noise).clamp(0, 1)
        for _ in range(config.adv_steps):
            adv = adv.detach().requires_grad_(True)
            kl = F.kl_div(F.log_softmax(raw_model(adv).float(), dim=1), p_clean, reduction="sum")
            (grad,) = torch.autograd.grad(kl, adv)
            adv = clip_to_box_and_ball(images, adv + config.adv_step_size * grad.sign(), "linf", config.adv_eps)
    return adv.detach()


def training_loss(
    model: nn.Module,
    raw_model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    autocast: Callable[[], Any],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one training step under ``config`` and the logits of the (first) view, for accuracy.

    Args:
        model: the module to train (possibly wrapped in DistributedDataParallel).
        raw_model: the unwrapped module; attacks run on it so DDP sees exactly one forward per backward.
        images: ``N x C x H x W`` in [0, 1], already translated; labels: ``N`` int64.
        config: the run's config; generator: every random draw of the step; autocast: AMP context factory.
    """
    mode = config.adv_training
    if mode == "pgd":
        attack = PGD(
            raw_model,
            eps=config.adv_eps,
            norm="linf",
            steps=config.adv_steps,
            rel_stepsize=config.adv_step_size / max(config.adv_eps, 1e-12),
        )
        images = attack(images, labels, generator=generator)
    if mode == "trades":
        adv = trades_adversary(raw_model, images, config, generator)
        with autocast():
            logits = model(torch.cat([images, adv]))
        clean, adv_logits = logits.float().chunk(2)
        robust = F.kl_div(F.log_softmax(adv_logits, dim=1), F.softmax(clean, dim=1), reduction="batchmean")
        return _ce(clean, labels, config) + config.trades_beta * robust, clean
    if config.augmix:
        views = [images, augmix_view(images, config.augmix_severity, generator)]
        views.append(augmix_view(images, config.augmix_severity, generator))
        with autocast():
            logits = model(torch.cat(views))
        parts = logits.float().chunk(3)
        return _ce(parts[0], labels, config) + config.jsd_weight * jensen_shannon(*parts), parts[0]
    mixers = [(a, fn) for a, fn in ((config.mixup_alpha, mixup), (config.cutmix_alpha, cutmix)) if a > 0]
    if mixers:
        # With both switched on, each step picks one of them at random (as timm does).
        pick = int(torch.randint(0, len(mixers), (1,), generator=generator)) if len(mixers) > 1 else 0
        alpha, fn = mixers[pick]
        mixed, perm, lam = fn(images, alpha, generator)
        with autocast():
            logits = model(mixed).float()
        loss = lam * _ce(logits, labels, config) + (1 - lam) * _ce(logits, labels[perm], config)
        return loss, logits
    with autocast():
        logits = model(images).float()
    return _ce(logits, labels, config), logits
