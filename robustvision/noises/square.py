"""Square Attack under l-inf (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020, arXiv:1912.00049).

A score-based black-box attack: it never reads a gradient. Starting from vertical stripes of ``+-eps``, each query
redraws one random square window (side shrinking with the schedule ``p``) with a random ``+-2 eps`` per channel,
projects back onto the l-inf ball and the box, and keeps the candidate when the margin ``z_y - max_{j != y} z_j``
drops (or the point becomes misclassified). A sample stops as soon as it is misclassified. In AutoAttack it checks
that a model is not robust only because its gradients are masked.

Ported from fra31/auto-attack (MIT licence, Copyright (c) 2020 Francesco Croce), ``autoattack/square.py``, with two
differences: the window position and signs are drawn per sample (the paper's algorithm; the reference's PyTorch port
shares one window across the batch), and randomness comes from an explicit generator.

Example:
    >>> adv = SquareAttack(model, eps=8 / 255, n_queries=5000)(images, labels)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from robustvision.noises.adversarial import Attack, bview, draw_seed, margin_loss
from robustvision.noises.base import NOISES, NoiseKind

# The reference's schedule: the share p of pixels in a window halves at these query counts (for 10,000 queries).
P_SCHEDULE: tuple[tuple[int, int], ...] = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
)


def p_selection(p_init: float, it: int, n_queries: int, rescale: bool) -> float:
    """Window share at query ``it`` (AutoAttack uses ``rescale=False``: the 10,000-query schedule as is)."""
    if rescale:
        it = int(it / n_queries * 10000)
    div = 512
    for bound, d in P_SCHEDULE:
        if it <= bound:
            div = d
            break
    return p_init / div


class SquareAttack(Attack):
    """Square Attack, l-inf, margin loss.

    Args:
        model: the model (or pass it per call).
        eps: l-inf budget.
        n_queries: queries per sample (5000 in AutoAttack).
        p_init: initial window share (0.8 in AutoAttack).
        rescale_schedule: stretch the schedule to ``n_queries`` (off in AutoAttack).

    Shape: ``N x C x H x W`` in [0, 1] -> same, ``||adv - x||_inf <= eps``.
    """

    name = "square_linf"
    norm = "linf"

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float,
        n_queries: int = 5000,
        p_init: float = 0.8,
        rescale_schedule: bool = False,
    ) -> None:
        super().__init__(model, eps=eps, loss="margin")
        if n_queries < 1:
            raise ValueError(f"{self.name}: n_queries must be >= 1, got {n_queries}")
        if not 0 < p_init <= 1:
            raise ValueError(f"{self.name}: p_init must lie in (0, 1], got {p_init}")
        self.n_queries = int(n_queries)
        self.p_init = float(p_init)
        self.rescale_schedule = bool(rescale_schedule)

    @property
    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "norm": "linf", "n_queries": self.n_queries, "p_init": self.p_init}

    def sample_params(self, shape, generator=None):
        return {"seed": draw_seed(generator)}

    def perturb(self, model, images, labels, params):
        gen = torch.Generator().manual_seed(int(params["seed"]))
        eps = self.eps
        n, c, h, w = images.shape
        dev = images.device

        def signs(*shape: int) -> torch.Tensor:
            return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(dev, images.dtype)

        with torch.no_grad():
            x_best = (images + eps * signs(n, c, 1, w)).clamp(0, 1)
            margin = -margin_loss(model(x_best), labels)  # z_y - max other: > 0 while correct
            rows = torch.arange(h, device=dev)
            cols = torch.arange(w, device=dev)
            for it in range(self.n_queries - 1):  # the stripes start was the first query
                idx = (margin > 0).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                m = idx.numel()
                p = p_selection(self.p_init, it, self.n_queries, self.rescale_schedule)
                s = min(max(int(round(math.sqrt(p * c * h * w / c))), 1), h, w)
                vh = torch.randint(0, h - s + 1, (m,), generator=gen).to(dev)
                vw = torch.randint(0, w - s + 1, (m,), generator=gen).to(dev)
                in_h = (rows[None] >= vh[:, None]) & (rows[None] < vh[:, None] + s)
                in_w = (cols[None] >= vw[:, None]) & (cols[None] < vw[:, None] + s)
                window = (in_h[:, :, None] & in_w[:, None, :])[:, None].to(images.dtype)
                x = images[idx]
                cand = x_best[idx] + window * (2 * eps) * signs(m, c, 1, 1)
                cand = torch.minimum(torch.maximum(cand, x - eps), x + eps).clamp(0, 1)
                new_margin = -margin_loss(model(cand), labels[idx])
                improved = (new_margin < margin[idx]) | (new_margin <= 0)
                x_best[idx] = torch.where(bview(improved, cand), cand, x_best[idx])
                margin[idx] = torch.where(improved, new_margin, margin[idx])
        return x_best


NOISES.add(
    "square_linf",
    SquareAttack,
    kind=NoiseKind.ADVERSARIAL,
    family="square",
    norm="linf",
    paper="Andriushchenko et al. 2020",
)
