"""The attacks of multi-perturbation training: box-aware l1 top-k PGD, and Multi Steepest Descent (MSD).

- ``pgd_l1_topk``: the sparse l1 PGD of Maini et al. (2020, ``pgd_l1_topk`` in locuslab/robust_union), used by
  GBN's reference code for training and evaluation. Each step moves the ``k`` coordinates with the largest gradient
  (``k`` drawn uniformly from 5..20 per run) by ``alpha / k`` each, *skipping coordinates within ``gap`` of the
  [0, 1] box that the gradient pushes outward* (on MNIST most pixels sit at 0 or 1, so an l1 step that ignores the
  box wastes itself), then projects on the l1 ball (Duchi et al., 2008) and clips to the box. It is registered as a
  noise (``create_noise("pgd_l1_topk", eps=10)``) so evaluations can name it beside the suite's attacks.
- :func:`msd_perturb`: MSD (Maini, Wong & Kolter, ICML 2020): one gradient per iteration, the three steepest-ascent
  candidates (l-inf, l2, l1) from the current point, keep the highest-loss one per example, and return the best
  point seen over all iterations.

Both work on [0, 1] images and never leave their balls; the model's mode is the caller's business for the
functions, and restored by the registered attack class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustvision.noises.adversarial import Attack, attack_mode, clip_to_box_and_ball, project, random_start
from robustvision.noises.base import NOISES, NoiseKind

NORMS: tuple[str, ...] = ("l1", "l2", "linf")
DEFAULT_L1_K_RANGE: tuple[int, int] = (5, 20)
DEFAULT_L1_GAP: float = 0.05


def check_norm(norm: str) -> str:
    """Return ``norm`` when it is one of l1, l2, linf; otherwise one clear error."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    return norm


def l1_topk_direction(grad: torch.Tensor, adv: torch.Tensor, k: int, gap: float = DEFAULT_L1_GAP) -> torch.Tensor:
    """Sign of the gradient on its ``k`` largest coordinates that can still move inside the box (0 elsewhere).

    A coordinate is frozen when the gradient pushes it outward and it lies within ``gap`` of that bound.
    """
    blocked = ((grad < 0) & (adv <= gap)) | ((grad > 0) & (adv >= 1 - gap))
    g = grad.masked_fill(blocked, 0).flatten(1)
    k = max(1, min(int(k), g.shape[1]))
    kth = g.abs().topk(k, dim=1).values[:, -1:]
    direction = (g.abs() >= kth).to(grad.dtype) * g.sign()  # sign(0) = 0 keeps blocked coordinates still
    return direction.view_as(grad)


def ascent_step(
    grad: torch.Tensor, adv: torch.Tensor, norm: str, alpha: float, k: int = 10, gap: float = DEFAULT_L1_GAP
) -> torch.Tensor:
    """The steepest-ascent increment of size ``alpha`` under ``norm`` (l1: ``alpha / k`` on ``k`` coordinates)."""
    if norm == "linf":
        return alpha * grad.sign()
    if norm == "l2":
        n = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
        return alpha * grad / n
    if norm == "l1":
        return (alpha / k) * l1_topk_direction(grad, adv, k, gap)
    raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")


def _draw_k(k_range: Sequence[int], generator: torch.Generator | None) -> int:
    lo, hi = int(k_range[0]), int(k_range[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"l1 k range must satisfy 1 <= low <= high, got {tuple(k_range)}")
    return int(torch.randint(lo, hi + 1, (1,), generator=generator))


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(model: nn.Module, adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The default objective: summed cross-entropy of the model's logits."""
    return F.cross_entropy(model(adv), labels, reduction="sum")


def _input_grad(model: nn.Module, adv: torch.Tensor, labels: torch.Tensor, loss_fn: LossFn = ce_loss) -> torch.Tensor:
    adv = adv.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model, adv, labels), adv)
    return grad


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
    generator: torch.Generator | None = None,
    loss_fn: LossFn = ce_loss,
) -> torch.Tensor:
    """One PGD run under ``norm`` on the model as it is (the caller sets eval mode / the GBN route).

    Args:
        norm: ``l1`` (box-aware top-k), ``l2`` or ``linf``.
        eps: ball radius in [0, 1] pixel units.
        steps: iterations.
        alpha: total step length per iteration (default ``2.5 * eps / steps``, Madry et al.).
        start: an initial perturbation (projected and clipped), or None for zero.
        k_range: l1 only: ``k`` is drawn uniformly from this inclusive range once per run.
        gap: l1 only: distance to a box bound under which an outward coordinate is frozen.
        generator: draws ``k``.
        loss_fn: the objective to ascend, ``(model, adv, labels) -> scalar`` (default: summed cross-entropy).

    Returns:
        Adversarial images, detached, inside the box and the ball. Shape ``N x C x H x W``.
    """
    check_norm(norm)
    alpha = float(alpha if alpha is not None else 2.5 * eps / max(1, steps))
    k = _draw_k(k_range, generator) if norm == "l1" else 0
    adv = images.clone() if start is None else clip_to_box_and_ball(images, images + start, norm, eps)
    for _ in range(int(steps)):
        grad = _input_grad(model, adv, labels, loss_fn)
        adv = clip_to_box_and_ball(images, adv + ascent_step(grad, adv, norm, alpha, k, gap), norm, eps)
    return adv.detach()


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
    k = _draw_k(k_range, generator)
    delta = torch.zeros_like(images)
    best = images.clone()
    best_loss = torch.full((images.shape[0],), float("-inf"), device=images.device)
    for _ in range(int(steps)):
        grad = _input_grad(model, images + delta, labels)
        cand_delta, cand_loss = [], []
        for norm, eps in budgets.items():
            d = project(delta + ascent_step(grad, images + delta, norm, alphas[norm], k, gap), norm, eps)
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


if "pgd_l1_topk" not in NOISES:
    NOISES.add("pgd_l1_topk", TopKL1PGD, kind=NoiseKind.ADVERSARIAL, norm="l1")


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

        self.layers = [m for _, m in gbn_layers(model)]
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
