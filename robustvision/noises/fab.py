"""FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020, arXiv:1907.02044).

FAB looks for the smallest perturbation that changes the decision. Each step linearises the decision boundary
between the true class ``y`` and a target ``t`` at the current point, ``f(z) = z_t - z_y ~ f(x_k) + g.(z - x_k)``,
projects both the current point and the original image onto that hyperplane intersected with the [0, 1] box
(minimal ``norm`` distance), and moves to a convex combination of the two projections biased towards the original
image (weight ``alpha = min(|d_k| / (|d_k| + |d_0|), alpha_max)``), overshooting by ``eta``. When a step crosses the
boundary it is recorded if it is the smallest so far and pulled back towards the image by ``beta``. AutoAttack's
FAB-T runs it once (no random start, 100 iterations) for each of the 9 most likely wrong classes and counts a success
only when the found perturbation is within ``eps``.

Algorithm ported from fra31/auto-attack (MIT licence, Copyright (c) 2019 Francesco Croce), ``autoattack/fab_base.py``
and ``fab_pt.py``. The box-constrained hyperplane projections are derived here from their optimality conditions and
written afresh (:func:`project_hyperplane_box`): sorted break-points for l-inf and l2, a greedy fill for l1.

Example:
    >>> adv = FABTargeted(model, eps=8 / 255)(images, labels)   # doctest: +SKIP
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from robustvision.noises.adversarial import NORMS, Attack, Norm, bview, draw_seed, lp_norm
from robustvision.noises.base import NOISES, NoiseKind


def project_hyperplane_box(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Minimal-``norm`` ``d`` with ``w . (t + d) = b`` and ``0 <= t + d <= 1``, per row.

    Every coordinate moves towards ``sign(w_i) * sign(b - w.t)``, by at most the room ``cap_i`` the box leaves
    that way. Under l-inf the moves are ``min(lam, cap_i)``, under l2 ``min(lam |w_i|, cap_i)`` (KKT), with ``lam``
    the smallest value reaching the hyperplane; the gain ``sum |w_i| move_i`` is piecewise linear in ``lam``, so
    ``lam`` is read off the sorted break-points. Under l1 the cheapest coordinates (largest ``|w_i|``) are filled
    first. When the box does not reach the hyperplane the maximal move is returned (the reference does the same).

    Args:
        t: points ``B x D`` in [0, 1]; w: normals ``B x D``; b: offsets ``B``; norm: ``linf``, ``l2`` or ``l1``.

    Returns:
        ``d`` of shape ``B x D``.
    """
    need = b - (w * t).sum(1)
    flip = torch.where(need >= 0, 1.0, -1.0).to(w.dtype)
    w = w * flip[:, None]
    need = need.abs()
    aw = w.abs()
    cap = torch.where(w > 0, 1 - t, t).clamp_min(0) * (w != 0)
    n, dim = w.shape
    if norm == "l1":
        order = aw.argsort(dim=1, descending=True)
        aw_s, cap_s = aw.gather(1, order), cap.gather(1, order)
        cum = (aw_s * cap_s).cumsum(1)
        full = (cum < need[:, None]).sum(1)  # coordinates filled completely
        last = full.clamp(max=dim - 1)
        before = torch.where(full > 0, cum.gather(1, (full - 1).clamp_min(0)[:, None]).squeeze(1), 0.0)
        partial = ((need - before) / aw_s.gather(1, last[:, None]).squeeze(1).clamp_min(1e-12)).clamp_min(0)
        partial = torch.minimum(partial, cap_s.gather(1, last[:, None]).squeeze(1))
        ranks = torch.arange(dim, device=w.device)[None, :]
        amount_s = torch.where(ranks < full[:, None], cap_s, torch.zeros_like(cap_s))
        amount_s = torch.where((ranks == last[:, None]) & (full < dim)[:, None], partial[:, None], amount_s)
        amount = torch.zeros_like(amount_s).scatter_(1, order, amount_s)
        return w.sign() * amount
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    rate = torch.ones_like(aw) if norm == "linf" else aw
    rate = rate * (w != 0)
    brk = torch.where(rate > 0, cap / rate.clamp_min(1e-30), torch.zeros_like(cap))
    brk_s, order = brk.sort(dim=1)
    slope_s = (aw * rate).gather(1, order)  # gain per unit of lam while a coordinate is free
    sat_s = (aw * cap).gather(1, order)  # gain of a saturated coordinate
    cum_sat = sat_s.cumsum(1)
    cum_slope = slope_s.cumsum(1)
    total_slope = cum_slope[:, -1:]
    gain_at = cum_sat + brk_s * (total_slope - cum_slope)  # gain when lam equals each break-point
    j = (gain_at < need[:, None]).sum(1)  # first break-point whose gain reaches the need
    feasible = j < dim
    jc = j.clamp(max=dim - 1)
    prev_sat = torch.where(j > 0, cum_sat.gather(1, (jc - 1).clamp_min(0)[:, None]).squeeze(1), 0.0)
    prev_slope = torch.where(j > 0, cum_slope.gather(1, (jc - 1).clamp_min(0)[:, None]).squeeze(1), 0.0)
    lam = (need - prev_sat) / (total_slope.squeeze(1) - prev_slope).clamp_min(1e-30)
    lam = torch.where(feasible, lam, brk_s[:, -1])
    amount = torch.minimum(lam[:, None] * rate, cap)
    return w.sign() * amount


def fab_targeted_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor,
    *,
    norm: str,
    steps: int,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    x_start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One FAB run towards ``target``; returns the smallest misclassified point found and its norm (inf if none)."""
    n = x.shape[0]
    x0 = x.flatten(1)
    x1 = (x_start if x_start is not None else x).clone()
    adv = x.clone()
    best = torch.full((n,), float("inf"), device=x.device)
    rows = torch.arange(n, device=x.device)
    for _ in range(steps):
        z = x1.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(z)
            diff = logits[rows, target] - logits[rows, y]
            (grad,) = torch.autograd.grad(diff.sum(), z)
        with torch.no_grad():
            w = grad.flatten(1)
            b = (w * x1.flatten(1)).sum(1) - diff.detach()
            d = project_hyperplane_box(torch.cat((x1.flatten(1), x0)), torch.cat((w, w)), torch.cat((b, b)), norm)
            d1, d2 = d[:n].view_as(x), d[n:].view_as(x)
            a1 = lp_norm(d1, norm).clamp_min(1e-8)
            a2 = lp_norm(d2, norm).clamp_min(1e-8)
            alpha = bview((a1 / (a1 + a2)).clamp(0.0, alpha_max), x)
            x1 = ((x1 + eta * d1) * (1 - alpha) + (x + eta * d2) * alpha).clamp(0, 1)
            is_adv = model(x1).argmax(1) != y
            dist = lp_norm(x1 - x, norm)
            better = is_adv & (dist < best)
            adv[better] = x1[better]
            best = torch.where(better, dist, best)
            x1 = torch.where(bview(is_adv, x), x + (x1 - x) * beta, x1)
    return adv, best


class FABTargeted(Attack):
    """Targeted FAB (FAB-T) as in standard AutoAttack: for each of the ``n_target_classes`` most likely wrong
    classes, one run of ``steps`` iterations on the points still robust; success means a misclassified point
    within ``eps``.

    Args:
        model: the model (or pass it per call).
        eps: budget in ``norm`` (FAB minimises the norm; ``eps`` decides what counts).
        norm: ``linf``, ``l2`` or ``l1``.
        steps: iterations per target (100).
        n_target_classes: targets tried (9).
        restarts: runs per target; runs after the first start at a random point (1 in AutoAttack).
        alpha_max, eta, beta: FAB's bias limit (0.1), overshoot (1.05) and backward step (0.9).

    Shape: ``N x C x H x W`` in [0, 1] -> same; points not broken within ``eps`` come back unchanged.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float,
        norm: Norm = "linf",
        steps: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
    ) -> None:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
        self.norm = norm
        self.name = "fab_t" if norm == "linf" else f"fab_t_{norm}"
        super().__init__(model, eps=eps)
        if steps < 1 or n_target_classes < 1 or restarts < 1:
            raise ValueError(f"{self.name}: steps, n_target_classes and restarts must be >= 1")
        self.steps = int(steps)
        self.n_target_classes = int(n_target_classes)
        self.restarts = int(restarts)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "norm": self.norm,
            "steps": self.steps,
            "n_target_classes": self.n_target_classes,
            "restarts": self.restarts,
            "alpha_max": self.alpha_max,
            "eta": self.eta,
            "beta": self.beta,
        }

    def sample_params(self, shape, generator=None):
        return {"seed": draw_seed(generator)}

    def _random_start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # The reference starts restarts at half the budget in a random direction.
        if self.norm == "linf":
            t = 2 * torch.rand(x.shape, generator=gen) - 1
        else:
            t = torch.randn(x.shape, generator=gen)
        t = t.to(x.device)
        return (x + 0.5 * self.eps * t / bview(lp_norm(t, self.norm).clamp_min(1e-12), t)).clamp(0, 1)

    def perturb(self, model, images, labels, params):
        gen = torch.Generator().manual_seed(int(params["seed"]))
        with torch.no_grad():
            clean_logits = model(images)
        num_classes = clean_logits.shape[1]
        if num_classes < 2:
            raise ValueError(f"{self.name} needs at least 2 classes, got {num_classes}")
        robust = clean_logits.argmax(1) == labels
        order = clean_logits.argsort(dim=1)
        adv = images.clone()
        for rank in range(2, min(self.n_target_classes, num_classes - 1) + 2):
            for restart in range(self.restarts):
                idx = robust.nonzero().squeeze(1)
                if idx.numel() == 0:
                    return adv
                x, y = images[idx], labels[idx]
                start = self._random_start(x, gen) if restart > 0 else None
                found, dist = fab_targeted_run(
                    model, x, y, order[idx, -rank], norm=self.norm, steps=self.steps, alpha_max=self.alpha_max,
                    eta=self.eta, beta=self.beta, x_start=start,
                )  # fmt: skip
                ok = dist <= self.eps * (1 + 1e-6)
                if ok.any():
                    # Guard the float tolerance: bring the point exactly inside the ball.
                    delta = found[ok] - x[ok]
                    scale = (self.eps / lp_norm(delta, self.norm).clamp_min(1e-12)).clamp(max=1.0)
                    adv[idx[ok]] = (x[ok] + delta * bview(scale, delta)).clamp(0, 1)
                    robust[idx[ok]] = False
        return adv


def _register() -> None:
    for norm in NORMS:
        NOISES.add(
            "fab_t" if norm == "linf" else f"fab_t_{norm}",
            functools.partial(FABTargeted, norm=norm),
            kind=NoiseKind.ADVERSARIAL,
            family="fab",
            norm=norm,
            paper="Croce & Hein 2020 (FAB)",
        )


_register()
