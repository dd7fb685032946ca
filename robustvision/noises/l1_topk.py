"""Sparse l1 PGD with a top-k step (``pgd_l1_topk``), and the per-norm PGD loop that multi-perturbation training uses.

- :func:`lp_pgd`: one PGD run under l1, l2 or l-inf with the steps of :func:`~robustvision.noises.adversarial.
  steepest_step` (l1: ``pgd_l1_topk``'s top-k step), optionally stopping per example once it is misclassified (the
  ``correct`` mask of the GBN and MSD reference code: an example that is already wrong does not move).
- :class:`TopKL1PGD`, registered as ``pgd_l1_topk``: the sparse l1 PGD of Maini et al. (ICML 2020, ``pgd_l1_topk``
  in locuslab/robust_union), used by GBN's reference code for training and evaluation. Each step moves the ``k``
  coordinates with the largest gradient (``k`` drawn uniformly from 5..20) by ``alpha / k`` each, *skipping
  coordinates within ``gap`` of the [0, 1] box that the gradient pushes outward* (on MNIST most pixels sit at 0 or
  1, so an l1 step that ignores the box wastes itself), then projects on the intersection of the l1 ball and the
  box (Croce & Hein, 2021).

Everything works on [0, 1] images and never leaves its ball; the model's mode is the caller's business for
:func:`lp_pgd`, and restored by the registered attack class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustvision.noises.adversarial import (
    Attack,
    bview,
    check_norm,
    clip_to_box_and_ball,
    l1_topk_direction,
    random_start,
    steepest_step,
)
from robustvision.noises.base import NOISES, NoiseKind

DEFAULT_L1_K_RANGE: tuple[int, int] = (5, 20)
DEFAULT_L1_GAP: float = 0.05

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["DEFAULT_L1_GAP", "DEFAULT_L1_K_RANGE", "TopKL1PGD", "ce_loss", "draw_k", "l1_topk_direction", "lp_pgd"]


def ce_loss(model: nn.Module, adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The default objective: summed cross-entropy of the model's logits."""
    return F.cross_entropy(model(adv), labels, reduction="sum")


def draw_k(k_range: Sequence[int], generator: torch.Generator | None) -> int:
    """``k`` of the top-k l1 step, uniform over the inclusive ``k_range``."""
    lo, hi = int(k_range[0]), int(k_range[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"l1 k range must satisfy 1 <= low <= high, got {tuple(k_range)}")
    return int(torch.randint(lo, hi + 1, (1,), generator=generator))


def lp_pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int,
    alpha: float | None = None,
    start: torch.Tensor | None = None,
    k_range: Sequence[int] = DEFAULT_L1_K_RANGE,
    gap: float = DEFAULT_L1_GAP,
    k_per_step: bool = False,
    freeze_box: bool = False,
    early_stop: bool = False,
    generator: torch.Generator | None = None,
    loss_fn: LossFn = ce_loss,
) -> torch.Tensor:
    """One PGD run under ``norm`` on the model as it is (the caller sets eval mode / the GBN route).

    Args:
        model: the model (any mode; the caller chooses).
        images, labels: ``N x C x H x W`` in [0, 1] and int64 labels.
        norm: ``l1`` (box-aware top-k), ``l2`` or ``linf``.
        eps: ball radius in [0, 1] pixel units.
        steps: iterations.
        alpha: total step length per iteration (default ``2.5 * eps / steps``, Madry et al.).
        start: an initial perturbation (projected and clipped), or None for zero.
        k_range: l1 only: ``k`` is drawn uniformly from this inclusive range.
        gap: l1 only: distance to a box bound under which an outward coordinate is frozen.
        k_per_step: l1 only: draw ``k`` again at every iteration (the reference code) instead of once per run.
        freeze_box: l1 only: also freeze coordinates sitting on a bound whatever the gradient (the reference code).
        early_stop: move only the examples the model still classifies correctly at the current point (the
            reference code's ``correct`` mask); the objective is then the summed cross-entropy.
        generator: draws ``k``.
        loss_fn: the objective to ascend, ``(model, adv, labels) -> scalar`` (default: summed cross-entropy).

    Returns:
        Adversarial images, detached, inside the box and the ball. Shape ``N x C x H x W``.

    Example:
        >>> adv = lp_pgd(model, x, y, norm="l1", eps=10, steps=50, alpha=1.0)   # doctest: +SKIP
    """
    check_norm(norm)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    alpha = float(alpha if alpha is not None else 2.5 * eps / max(1, steps))
    k = draw_k(k_range, generator) if norm == "l1" else None
    adv = images.clone() if start is None else clip_to_box_and_ball(images, images + start, norm, eps)
    for _ in range(int(steps)):
        if norm == "l1" and k_per_step:
            k = draw_k(k_range, generator)
        x = adv.detach().requires_grad_(True)
        if early_stop:
            logits = model(x)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), x)
            active = (logits.argmax(1) == labels).to(adv.dtype)
        else:
            (grad,) = torch.autograd.grad(loss_fn(model, x, labels), x)
        move = steepest_step(grad, norm, alpha, adv=adv, l1_k=k, l1_gap=gap, l1_freeze_box=freeze_box)
        if early_stop:
            move = move * bview(active, move)
        adv = clip_to_box_and_ball(images, adv + move, norm, eps)
    return adv.detach()


class TopKL1PGD(Attack):
    """Box-aware sparse l1 PGD (``pgd_l1_topk`` of Maini et al., 2020), with random restarts.

    Args:
        model: the model to attack.
        eps: l1 budget in [0, 1] pixel units (MNIST: 10; CIFAR-10: 12).
        steps: iterations per run (reference: 50).
        rel_stepsize: total l1 step per iteration as a fraction of eps (default ``2.5 / steps``).
        restarts: extra runs from random points in the ball; each sample keeps its worst case.
        k_range: ``k`` (coordinates moved per step) drawn uniformly from this range per run.
        gap: coordinates within ``gap`` of the box bound they are pushed towards are frozen.

    Shape: ``N x C x H x W`` in [0, 1] -> same, with ``||adv - x||_1 <= eps``.

    Example:
        >>> attack = create_noise("pgd_l1_topk", eps=10, steps=50)       # doctest: +SKIP
        >>> adv = attack(images, labels, model=model)                      # doctest: +SKIP
    """

    name = "pgd_l1_topk"
    norm = "l1"

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float,
        steps: int = 50,
        rel_stepsize: float | None = None,
        restarts: int = 0,
        k_range: Sequence[int] = DEFAULT_L1_K_RANGE,
        gap: float = DEFAULT_L1_GAP,
    ) -> None:
        super().__init__(model, eps=eps)
        if steps < 1:
            raise ValueError(f"{self.name}: steps must be >= 1, got {steps}")
        self.steps = int(steps)
        self.rel_stepsize = float(rel_stepsize if rel_stepsize is not None else 2.5 / steps)
        self.restarts = int(restarts)
        self.k_range = tuple(int(v) for v in k_range)
        self.gap = float(gap)

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "steps": self.steps, "rel_stepsize": self.rel_stepsize, "restarts": self.restarts}

    def sample_params(self, shape, generator=None):
        # The first run starts at the image (as the reference); restarts start at random points of the ball.
        seeds = torch.randint(0, 2**62, (1 + self.restarts,), generator=generator).tolist()
        return {
            "starts": [None] + [random_start(shape, "l1", self.eps, generator) for _ in range(self.restarts)],
            "seeds": seeds,
        }

    def perturb(self, model, images, labels, params):
        best = images.clone()
        best_score = torch.full((images.shape[0],), float("-inf"), device=images.device)
        for start, seed in zip(params["starts"], params["seeds"], strict=True):
            g = torch.Generator().manual_seed(int(seed))
            adv = lp_pgd(
                model,
                images,
                labels,
                norm="l1",
                eps=self.eps,
                steps=self.steps,
                alpha=self.rel_stepsize * self.eps,
                start=None if start is None else start.to(images.device),
                k_range=self.k_range,
                gap=self.gap,
                generator=g,
            )
            with torch.no_grad():
                logits = model(adv)
                score = self.loss_fn(logits, labels) + 1e6 * (logits.argmax(1) != labels).float()
            better = score > best_score
            best[better] = adv[better]
            best_score = torch.where(better, score, best_score)
        return best


NOISES.add(
    "pgd_l1_topk",
    TopKL1PGD,
    kind=NoiseKind.ADVERSARIAL,
    family="gradient",
    norm="l1",
    paper="Maini et al. 2020 (top-k l1 PGD)",
)
