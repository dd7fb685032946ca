"""Multi-perturbation attacks of the defences: Multi Steepest Descent (MSD) and the gate-steering attack on GBN.

- :func:`msd_perturb`: MSD (Maini, Wong & Kolter, ICML 2020): one gradient per iteration, the three steepest-ascent
  candidates (l-inf, l2, l1) from the current point, keep the highest-loss one per example, and return the best
  point seen over all iterations.
- :class:`GateSteeringPGD`: an adaptive attack on GBN that fools the classifier and drives every gate to a chosen
  branch.

The per-norm PGD (:func:`~robustvision.noises.l1_topk.lp_pgd`) and the sparse l1 attack ``pgd_l1_topk`` live in
:mod:`robustvision.noises.l1_topk`; the norm vocabulary and the ascent steps in
:mod:`robustvision.noises.adversarial`. Everything works on [0, 1] images and never leaves its balls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustvision.noises.adversarial import Norm, attack_mode, check_norm, project, random_start, steepest_step
from robustvision.noises.l1_topk import DEFAULT_L1_GAP, DEFAULT_L1_K_RANGE, ce_loss, draw_k, lp_pgd

# The order of GBN's branches and of every table of the defences (the papers' order).
NORMS: tuple[Norm, ...] = ("l1", "l2", "linf")

__all__ = ["NORMS", "GateSteeringPGD", "check_norm", "ce_loss", "lp_pgd", "msd_perturb"]


def msd_perturb(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    budgets: Mapping[str, float],
    steps: int,
    alphas: Mapping[str, float] | None = None,
    k_range: Sequence[int] = DEFAULT_L1_K_RANGE,
    gap: float = DEFAULT_L1_GAP,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Multi Steepest Descent (Maini et al., 2020, ``msd_v0``): the worst of l-inf/l2/l1 steps at every iteration.

    Each candidate is projected on *its own* ball and clipped to the box, so the returned point lies in the union
    of the balls (the threat model), not necessarily in any one of them.

    Args:
        budgets: eps per norm, e.g. ``{"l1": 10, "l2": 2.0, "linf": 0.3}`` (any non-empty subset of the norms).
        steps: iterations (one gradient each).
        alphas: step length per norm (default ``2.5 * eps / steps``).
        k_range, gap: the l1 step's settings (``k`` drawn once per call).
        generator: draws ``k``.

    Returns:
        The highest-loss point seen over all iterations, per example. Shape ``N x C x H x W``.
    """
    if not budgets:
        raise ValueError("MSD needs at least one norm budget")
    for norm in budgets:
        check_norm(norm)
    alphas = dict(alphas or {})
    alphas = {n: float(alphas.get(n, 2.5 * eps / max(1, steps))) for n, eps in budgets.items()}
    k = draw_k(k_range, generator)
    delta = torch.zeros_like(images)
    best = images.clone()
    best_loss = torch.full((images.shape[0],), float("-inf"), device=images.device)
    for _ in range(int(steps)):
        x = (images + delta).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(ce_loss(model, x, labels), x)
        cand_delta, cand_loss = [], []
        for norm, eps in budgets.items():
            step = steepest_step(grad, norm, alphas[norm], adv=images + delta, l1_k=k, l1_gap=gap)
            d = project(delta + step, norm, eps)
            d = (images + d).clamp(0, 1) - images
            with torch.no_grad():
                loss = F.cross_entropy(model(images + d), labels, reduction="none")
            cand_delta.append(d)
            cand_loss.append(loss)
        losses = torch.stack(cand_loss)  # norms x N
        pick = losses.argmax(dim=0)
        stacked = torch.stack(cand_delta)  # norms x N x C x H x W
        delta = stacked[pick, torch.arange(images.shape[0], device=images.device)]
        top = losses.gather(0, pick[None]).squeeze(0)
        better = top > best_loss
        best[better] = (images + delta)[better]
        best_loss = torch.where(better, top, best_loss)
    return best.detach()


class GateSteeringPGD:
    """Adaptive attack on GBN: PGD on the gated mixture's cross-entropy plus ``weight`` times the log gate weight of a
    chosen branch, summed over GBN layers, so the example both fools the classifier and drives every gate to that
    branch (e.g. the clean branch, whose statistics were never trained against perturbations).

    Args:
        model: a model with GBN layers (evaluated in eval mode, on the soft mixture).
        norm, eps: threat model.
        domain: the branch to steer the gates to.
        steps, restarts: PGD iterations and extra random restarts (the worst case per sample is kept).
        weight: weight of the gate term against the summed cross-entropy.

    Shape: ``N x C x H x W`` in [0, 1] -> same, inside the ``norm`` ball of radius ``eps``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str,
        eps: float,
        domain: str,
        steps: int = 50,
        restarts: int = 0,
        weight: float = 1.0,
        k_range: Sequence[int] = DEFAULT_L1_K_RANGE,
        gap: float = DEFAULT_L1_GAP,
    ) -> None:
        from robustvision.defenses.gbn import gbn_layers

        # Tied layers (gate once) have no gate of their own: steering the first gate steers them too.
        self.layers = [m for _, m in gbn_layers(model) if m.gate_source is None]
        if not self.layers:
            raise ValueError("the gate-steering attack needs a model with GatedBatchNorm layers")
        self.model = model
        self.norm = check_norm(norm)
        self.eps = float(eps)
        self.branch = self.layers[0].domain_index(domain)
        self.steps, self.restarts, self.weight = int(steps), int(restarts), float(weight)
        self.k_range, self.gap = tuple(k_range), float(gap)

    def loss(self, model: nn.Module, adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(model(adv), labels, reduction="sum")
        steer = sum(F.log_softmax(m.last_gate_logits, dim=1)[:, self.branch].sum() for m in self.layers)
        return ce + self.weight * steer

    def __call__(self, images, labels=None, model=None, *, generator=None) -> torch.Tensor:
        model = model if model is not None else self.model
        best = images.clone()
        best_score = torch.full((images.shape[0],), float("-inf"), device=images.device)
        with attack_mode(model):
            for r in range(1 + self.restarts):
                start = None
                if r > 0 or self.norm != "l1":  # l1's first run starts at the image, as the top-k PGD does
                    start = random_start(images.shape, self.norm, self.eps, generator).to(images.device)
                adv = lp_pgd(
                    model,
                    images,
                    labels,
                    norm=self.norm,
                    eps=self.eps,
                    steps=self.steps,
                    start=start,
                    k_range=self.k_range,
                    gap=self.gap,
                    generator=generator,
                    loss_fn=self.loss,
                )
                with torch.no_grad():
                    logits = model(adv)
                    score = F.cross_entropy(logits, labels, reduction="none") + 1e6 * (logits.argmax(1) != labels)
                better = score > best_score
                best[better] = adv[better]
                best_score = torch.where(better, score, best_score)
        return best
