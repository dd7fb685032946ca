"""Auto-PGD (Croce & Hein, ICML 2020, arXiv:2003.01690; l1 from "Mind the box", Croce & Hein, ICCV 2021).

APGD is PGD without a step-size to tune: it starts at ``2 eps`` (``eps`` under l1), adds momentum 0.75 and halves
the step of a sample at checkpoints where its loss stalled (fewer than ``rho = 0.75`` of the last steps improved it)
or where the last halving gave nothing; a halved sample restarts from its best point. Losses: cross-entropy, the
Difference of Logits Ratio (DLR, shift- and scale-invariant) and its targeted version (APGD-T).

Ported from fra31/auto-attack (MIT licence, Copyright (c) 2020 Francesco Croce), ``autoattack/autopgd_base.py`` at
commit a39220048b3c9f2cca9a4d3a54604793c68eca7e, and rewritten for this package: explicit generators, per-sample
vectorised book-keeping, the model's mode restored, no prints. Differences from the reference, each deliberate:

- the oscillation check of the first checkpoint compares the first step with the loss at the start point (the
  reference compares with an uninitialised zero row);
- points that are not fooled come back as their highest-loss iterate (inside the ball, still classified correctly)
  instead of the clean image, so the perturbation can be inspected or transferred; robust accuracy is unchanged.

Example:
    >>> attack = APGD(model, eps=8 / 255, loss="ce", steps=100)       # doctest: +SKIP
    >>> adv = attack(images, labels, generator=torch.Generator().manual_seed(0))   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustvision.noises.adversarial import (
    NORMS,
    Attack,
    Norm,
    bview,
    draw_seed,
    lp_norm,
    project_l1_box,
)
from robustvision.noises.base import NOISES, NoiseKind

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
APGD_LOSSES = ("ce", "dlr", "dlr_targeted")


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` (needs >= 3 classes)."""
    z_sorted, idx_sorted = logits.sort(dim=1)
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    top_is_y = (idx_sorted[:, -1] == labels).to(logits.dtype)
    best_other = z_sorted[:, -2] * top_is_y + z_sorted[:, -1] * (1 - top_is_y)
    return -(z_y - best_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (needs >= 4 classes)."""
    z_sorted, _ = logits.sort(dim=1)
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    z_t = logits.gather(1, targets[:, None]).squeeze(1)
    return -(z_y - z_t) / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12)


def _normalize(t: torch.Tensor, norm: str) -> torch.Tensor:
    return t / bview(lp_norm(t, norm) + 1e-12, t)


def _project(x: torch.Tensor, z: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Projection of the point ``z`` onto the ``norm`` ball around ``x`` intersected with [0, 1]."""
    if norm == "linf":
        return torch.minimum(torch.maximum(z, x - eps), x + eps).clamp(0, 1)
    if norm == "l2":
        d = z - x
        n = lp_norm(d, "l2")
        return (x + d * bview(torch.clamp(eps / (n + 1e-12), max=1.0), d)).clamp(0, 1)
    return (x + project_l1_box(x, z - x, eps)).clamp(0, 1)


def _start(x: torch.Tensor, norm: str, eps: float, gen: torch.Generator) -> torch.Tensor:
    """APGD's start: a random point on the l-inf/l2 sphere, or a Gaussian projected on the l1 ball and box."""
    if norm == "linf":
        t = (2 * torch.rand(x.shape, generator=gen) - 1).to(x.device)
        return (x + eps * _normalize(t, "linf")).clamp(0, 1)
    t = torch.randn(x.shape, generator=gen).to(x.device)
    if norm == "l2":
        return (x + eps * _normalize(t, "l2")).clamp(0, 1)
    return (x + project_l1_box(x, t, eps)).clamp(0, 1)


def apgd_single_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    norm: str,
    eps: float,
    steps: int,
    generator: torch.Generator,
    x_init: torch.Tensor | None = None,
    rho: float = 0.75,
    momentum: float = 0.75,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run on a batch.

    Args:
        model: the model (in eval mode, parameters frozen by the caller).
        x: clean images ``N x C x H x W``; y: labels ``N``.
        loss_fn: per-sample loss ``(logits, y) -> N`` to maximise.
        norm, eps: threat model; steps: iterations; generator: CPU generator for the start.
        x_init: start here instead of at a random point.
        rho: oscillation threshold of the checkpoints; momentum: weight of the new step (the old one gets 1 - it).

    Returns:
        ``(x_best, robust, loss_best, x_best_adv)``: the highest-loss iterate, whether each sample stayed correctly
        classified through every iterate, its best loss, and its last misclassified iterate (or the start).
    """
    n = x.shape[0]
    n_fts = math.prod(x.shape[1:])
    n_iter_2 = max(int(0.22 * steps), 1)
    n_iter_min = max(int(0.06 * steps), 1)
    size_decr = max(int(0.03 * steps), 1)

    x_adv = (x_init if x_init is not None else _start(x, norm, eps, generator)).clamp(0, 1)

    def loss_grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(z)
            loss = loss_fn(logits, y)
            (g,) = torch.autograd.grad(loss.sum(), z)
        return logits.detach(), loss.detach(), g.detach()

    logits, loss, grad = loss_grad(x_adv)
    x_best, x_best_adv, grad_best = x_adv.clone(), x_adv.clone(), grad.clone()
    robust = logits.argmax(1) == y
    loss_best = loss.clone()
    loss_steps = torch.zeros(steps + 1, n, device=x.device)
    loss_steps[0] = loss

    alpha = 1.0 if norm == "l1" else 2.0
    step = torch.full((n,), alpha * eps, device=x.device)
    x_old = x_adv.clone()
    k = max(int(0.04 * steps), 1) if norm == "l1" else n_iter_2
    # l1: share of coordinates a step may move, adapted at checkpoints to the sparsity of the best point.
    if x_init is None:
        topk = torch.full((n,), 0.2, device=x.device)
        sp_old = torch.full((n,), float(n_fts), device=x.device)
    else:
        sp_old = (x_adv - x).flatten(1).ne(0).sum(1).float()
        topk = sp_old / n_fts / 1.5
    counter = 0
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones(n, dtype=torch.bool, device=x.device)

    for i in range(steps):
        with torch.no_grad():
            prev_move = x_adv - x_old
            x_old = x_adv.clone()
            a = momentum if i > 0 else 1.0
            s = bview(step, x)
            if norm == "linf":
                z = _project(x, x_adv + s * grad.sign(), norm, eps)
                x_adv = _project(x, x_adv + (z - x_adv) * a + prev_move * (1 - a), norm, eps)
            elif norm == "l2":
                z = _project(x, x_adv + s * _normalize(grad, "l2"), norm, eps)
                x_adv = _project(x, x_adv + (z - x_adv) * a + prev_move * (1 - a), norm, eps)
            else:  # l1: sparse sign step on the top ``topk`` share of |grad|, no momentum (as the reference)
                flat = grad.abs().flatten(1)
                kth = ((1 - topk) * n_fts).long().clamp(0, n_fts - 1)
                thresh = flat.sort(dim=1).values.gather(1, kth[:, None])
                sparse = grad.sign() * (grad.abs() >= bview(thresh.squeeze(1), grad))
                direction = sparse / bview(lp_norm(sparse, "l1") + 1e-10, sparse)
                x_adv = _project(x, x_adv + s * direction, norm, eps)

        logits, loss, grad = loss_grad(x_adv)
        with torch.no_grad():
            pred = logits.argmax(1) == y
            robust &= pred
            x_best_adv[~pred] = x_adv[~pred]
            loss_steps[i + 1] = loss
            improved = loss > loss_best
            x_best[improved] = x_adv[improved]
            grad_best[improved] = grad[improved]
            loss_best = torch.where(improved, loss, loss_best)

            counter += 1
            if counter == k:
                if norm in ("linf", "l2"):
                    # Condition 1: fewer than rho * k of the last k steps increased the loss.
                    window = loss_steps[i + 1 - k : i + 2]
                    increases = (window[1:] > window[:-1]).float().sum(0)
                    oscillating = increases <= k * rho
                    # Condition 2: the step was not reduced at the last check and the best loss did not move.
                    stalled = (~reduced_last_check) & (loss_best_last_check >= loss_best)
                    reduce = oscillating | stalled
                    reduced_last_check = reduce.clone()
                    loss_best_last_check = loss_best.clone()
                    if reduce.any():
                        step[reduce] /= 2.0
                        x_adv[reduce] = x_best[reduce]
                        grad[reduce] = grad_best[reduce]
                    k = max(k - size_decr, n_iter_min)
                else:
                    sp_curr = (x_best - x).flatten(1).ne(0).sum(1).float()
                    shrunk = (sp_curr / sp_old) < 0.95
                    topk = sp_curr / n_fts / 1.5
                    step = torch.where(shrunk, torch.full_like(step, alpha * eps), step / 1.5)
                    step = step.clamp(alpha * eps / 10.0, alpha * eps)
                    sp_old = sp_curr
                    x_adv[shrunk] = x_best[shrunk]
                    grad[shrunk] = grad_best[shrunk]
                counter = 0
    return x_best, robust, loss_best, x_best_adv


def apgd_with_schedule(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    norm: str,
    eps: float,
    steps: int,
    generator: torch.Generator,
    large_reps: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run, or under l1 with ``large_reps`` the reference's eps schedule 3 eps, 2 eps, eps (30/30/40%)."""
    if not large_reps:
        return apgd_single_run(model, x, y, loss_fn, norm=norm, eps=eps, steps=steps, generator=generator)
    epss = [3.0 * eps, 2.0 * eps, eps]
    iters = [math.ceil(0.3 * steps), math.ceil(0.3 * steps)]
    iters.append(max(steps - sum(iters), 1))
    x_init = x + torch.randn(x.shape, generator=generator).to(x.device)
    # Only the last stage's points are inside the final budget: the larger ones only warm-start it.
    for e, it in zip(epss, iters, strict=True):
        x_init = (x + project_l1_box(x, x_init - x, e)).clamp(0, 1)
        x_init, robust, loss, x_adv = apgd_single_run(
            model, x, y, loss_fn, norm=norm, eps=e, steps=it, generator=generator, x_init=x_init
        )
    return x_init, robust, loss, x_adv


class APGD(Attack):
    """Auto-PGD with the cross-entropy, DLR or targeted-DLR loss, under l-inf, l2 or l1.

    Args:
        model: the model (or pass it per call).
        eps: budget in ``norm``.
        norm: ``linf``, ``l2`` or ``l1``.
        loss: ``ce`` (APGD-CE), ``dlr`` (APGD-DLR) or ``dlr_targeted`` (APGD-T).
        steps: iterations per run (100 in AutoAttack).
        restarts: runs for the untargeted losses, each on the points still robust (1 in standard AutoAttack;
            5 under l1).
        n_target_classes: APGD-T attacks the 2nd, 3rd, ... most likely classes in turn (9 in AutoAttack).
        rho: checkpoint oscillation threshold (0.75).
        large_reps: l1 only, run the 3 eps / 2 eps / eps schedule of AutoAttack's l1 version (default on for l1).

    Shape: ``N x C x H x W`` in [0, 1] -> same, ``||adv - x||_p <= eps``.

    Example:
        >>> adv = APGD(model, eps=8 / 255, loss="dlr_targeted")(images, labels)   # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float,
        norm: Norm = "linf",
        loss: str = "ce",
        steps: int = 100,
        restarts: int = 1,
        n_target_classes: int = 9,
        rho: float = 0.75,
        large_reps: bool | None = None,
    ) -> None:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
        if loss not in APGD_LOSSES:
            raise ValueError(f"APGD loss must be one of {APGD_LOSSES}, got {loss!r}")
        self.norm = norm
        if norm == "linf":
            self.name = {"ce": "apgd_ce", "dlr": "apgd_dlr", "dlr_targeted": "apgd_t"}[loss]
        else:
            self.name = {"ce": f"apgd_{norm}", "dlr": f"apgd_dlr_{norm}", "dlr_targeted": f"apgd_t_{norm}"}[loss]
        super().__init__(model, eps=eps)
        self.loss = loss
        if steps < 1 or restarts < 1 or n_target_classes < 1:
            raise ValueError(f"{self.name}: steps, restarts and n_target_classes must be >= 1")
        if not 0 < rho <= 1:
            raise ValueError(f"{self.name}: rho must lie in (0, 1], got {rho}")
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.n_target_classes = int(n_target_classes)
        self.rho = float(rho)
        self.large_reps = (norm == "l1") if large_reps is None else bool(large_reps)
        if self.large_reps and norm != "l1":
            raise ValueError(f"{self.name}: large_reps is the l1 schedule; it does not apply to {norm}")

    @property
    def params(self) -> dict[str, Any]:
        out = {**super().params, "steps": self.steps, "restarts": self.restarts, "rho": self.rho}
        if self.loss == "dlr_targeted":
            out["n_target_classes"] = self.n_target_classes
        if self.norm == "l1":
            out["large_reps"] = self.large_reps
        return out

    def sample_params(self, shape, generator=None):
        return {"seed": draw_seed(generator)}

    def perturb(self, model, images, labels, params):
        gen = torch.Generator().manual_seed(int(params["seed"]))
        with torch.no_grad():
            clean_logits = model(images)
        num_classes = clean_logits.shape[1]
        need = {"ce": 2, "dlr": 3, "dlr_targeted": 4}[self.loss]
        if num_classes < need:
            raise ValueError(f"{self.name}: the {self.loss} loss needs at least {need} classes, got {num_classes}")
        robust = clean_logits.argmax(1) == labels
        adv = images.clone()
        best_loss = torch.full((images.shape[0],), float("-inf"), device=images.device)
        if self.loss == "dlr_targeted":
            n_targets = min(self.n_target_classes, num_classes - 1)
            runs = [(r, t) for t in range(2, n_targets + 2) for r in range(self.restarts)]
        else:
            runs = [(r, None) for r in range(self.restarts)]
        order = clean_logits.argsort(dim=1)
        for _, target_rank in runs:
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x, y = images[idx], labels[idx]
            if target_rank is None:
                loss_fn: LossFn = (
                    functools.partial(F.cross_entropy, reduction="none") if self.loss == "ce" else dlr_loss
                )
            else:
                targets = order[idx, -target_rank]
                loss_fn = functools.partial(dlr_targeted_loss, targets=targets)
            x_best, still, loss_b, x_best_adv = apgd_with_schedule(
                model, x, y, loss_fn, norm=self.norm, eps=self.eps, steps=self.steps, generator=gen,
                large_reps=self.large_reps,
            )  # fmt: skip
            fooled = ~still
            adv[idx[fooled]] = x_best_adv[fooled]
            robust[idx[fooled]] = False
            # Robust points keep their highest-loss iterate (within the ball, still correct): see module docstring.
            keep = still & (loss_b > best_loss[idx]) if target_rank is None else still & (best_loss[idx] == -math.inf)
            adv[idx[keep]] = x_best[keep]
            best_loss[idx[keep]] = loss_b[keep]
        return adv


def _register() -> None:
    adv = NoiseKind.ADVERSARIAL
    paper = "Croce & Hein 2020"
    for loss, base in (("ce", "apgd_ce"), ("dlr", "apgd_dlr"), ("dlr_targeted", "apgd_t")):
        NOISES.add(
            base, functools.partial(APGD, norm="linf", loss=loss), kind=adv, family="apgd", norm="linf", paper=paper
        )
    for norm in ("l2", "l1"):
        NOISES.add(
            f"apgd_{norm}",
            functools.partial(APGD, norm=norm, loss="ce"),
            kind=adv,
            family="apgd",
            norm=norm,
            paper=paper + (" / Croce & Hein 2021 (l1)" if norm == "l1" else ""),
        )
        NOISES.add(
            f"apgd_t_{norm}",
            functools.partial(APGD, norm=norm, loss="dlr_targeted"),
            kind=adv,
            family="apgd",
            norm=norm,
            paper=paper,
        )


_register()
