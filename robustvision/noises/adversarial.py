"""White-box gradient attacks in pixel space ([0, 1] images), behind the noise registry.

FGSM (Goodfellow et al., 2015), PGD under l-inf, l2 and l1 (Madry et al., 2018; l1 by sparse steepest descent
with projection on the l1 ball, Tramer & Boneh, 2019) and MIM (Dong et al., 2018). Every attack:

- takes ``images`` ``N x C x H x W`` in [0, 1] and int64 ``labels``, and returns adversarial images in [0, 1]
  with ``||adv - images||_p <= eps`` per sample;
- is re-entrant: the model's train/eval mode and ``requires_grad`` flags are restored in ``finally``;
- draws its random start from the ``generator`` it is given, so a cell replays exactly.

Example:
    >>> attack = PGD(model, eps=8 / 255, norm="linf", steps=10)          # doctest: +SKIP
    >>> adv = attack(images, labels)                                     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustvision.noises.base import NOISES, Noise, NoiseKind
from robustvision.validation import check_labels

Norm = Literal["linf", "l2", "l1"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1")


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode without parameter gradients; restore both afterwards, even on error."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        model.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample l-p norm of a batch of perturbations."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def project_l1_ball(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection of each sample onto the l1 ball of radius ``eps`` (Duchi et al., 2008)."""
    flat = delta.flatten(1)
    abs_flat = flat.abs()
    outside = abs_flat.sum(dim=1) > eps
    if not outside.any():
        return delta
    sorted_abs, _ = abs_flat[outside].sort(dim=1, descending=True)
    cumsum = sorted_abs.cumsum(dim=1)
    ks = torch.arange(1, flat.shape[1] + 1, device=delta.device, dtype=delta.dtype)
    cond = sorted_abs - (cumsum - eps) / ks > 0
    rho = cond.to(delta.dtype).cumsum(dim=1).argmax(dim=1, keepdim=True)  # last index where cond holds
    theta = ((cumsum.gather(1, rho) - eps) / (rho + 1).to(delta.dtype)).clamp_min(0)
    out = flat.clone()
    out[outside] = flat[outside].sign() * (abs_flat[outside] - theta).clamp_min(0)
    return out.view_as(delta)


def project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Project perturbations onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = lp_norm(delta, "l2").clamp_min(1e-12).view(-1, *([1] * (delta.dim() - 1)))
        return delta * torch.clamp(eps / n, max=1.0)
    if norm == "l1":
        return project_l1_ball(delta, eps)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def random_start(shape: torch.Size, norm: str, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform draw inside the ball (l-inf: uniform cube; l2/l1: random direction, radius uniform in [0, eps])."""
    if norm == "linf":
        return (torch.rand(shape, generator=generator) * 2 - 1) * eps
    if norm == "l2":
        d = torch.randn(shape, generator=generator)
    else:
        d = torch.empty(shape).exponential_(generator=generator) * torch.randint(0, 2, shape, generator=generator).mul(
            2
        ).sub(1)
    d = d / lp_norm(d, norm).clamp_min(1e-12).view(-1, *([1] * (len(shape) - 1)))
    r = torch.rand(shape[0], generator=generator).view(-1, *([1] * (len(shape) - 1)))
    return d * r * eps


def steepest_step(grad: torch.Tensor, norm: str, step: float, l1_sparsity: float = 0.99) -> torch.Tensor:
    """The steepest-ascent step of length ``step`` under ``norm``.

    For l1 the step is sparse: only the coordinates whose gradient magnitude lies in the top ``1 - l1_sparsity``
    share move (Tramer & Boneh, 2019), spreading ``step`` over them, which is the l1 steepest-ascent direction
    relaxed to several coordinates.
    """
    shape = (-1, *([1] * (grad.dim() - 1)))
    if norm == "linf":
        return step * grad.sign()
    if norm == "l2":
        return step * grad / lp_norm(grad, "l2").clamp_min(1e-12).view(shape)
    if norm == "l1":
        flat = grad.flatten(1)
        k = max(1, int(round((1 - l1_sparsity) * flat.shape[1])))
        thresh = flat.abs().topk(k, dim=1).values[:, -1:]
        mask = (flat.abs() >= thresh).to(grad.dtype)
        direction = flat.sign() * mask
        direction = direction / direction.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
        return (step * direction).view_as(grad)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def clip_to_box_and_ball(images: torch.Tensor, adv: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Keep ``adv`` inside [0, 1] and inside the ball around ``images``.

    Projecting onto the ball and then clipping to the box can only shrink each coordinate of the perturbation
    towards zero, so the result is inside both sets for every norm used here.
    """
    delta = project(adv - images, norm, eps)
    return (images + delta).clamp(0, 1)


class Attack(Noise):
    """Base class of the gradient attacks: a :class:`Noise` of kind adversarial that needs a model.

    Args:
        model: the model to attack; may be given here (``attack(images, labels)``) or per call.
        eps: budget in the attack's norm, in [0, 1] pixel units.
        loss: ``ce`` (cross-entropy) or ``margin`` (CW-style logit margin).
    """

    kind = NoiseKind.ADVERSARIAL
    needs_model = True
    norm: str = "linf"

    def __init__(self, model: nn.Module | None = None, *, eps: float, loss: str = "ce") -> None:
        if not eps >= 0:
            raise ValueError(f"{self.name}: eps must be a non-negative number, got {eps!r}")
        if self.norm == "linf" and eps > 1:
            raise ValueError(f"{self.name}: an l-inf eps of {eps} exceeds the [0, 1] pixel range")
        if loss not in ("ce", "margin"):
            raise ValueError(f"{self.name}: loss must be 'ce' or 'margin', got {loss!r}")
        super().__init__(severity=eps)
        self.model = model
        self.eps = float(eps)
        self.loss = loss

    @property
    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "norm": self.norm, "loss": self.loss}

    def loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample loss to ascend."""
        if self.loss == "ce":
            return F.cross_entropy(logits, labels, reduction="none")
        true = logits.gather(1, labels[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
        return other - true

    def gradient(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        loss = self.loss_fn(model(x), labels).sum()
        (grad,) = torch.autograd.grad(loss, x)
        return grad

    def sample_params(self, shape: torch.Size, generator: torch.Generator | None = None) -> dict[str, Any]:
        return {}

    def apply(self, images, params, labels=None, model=None) -> torch.Tensor:
        model = model if model is not None else self.model
        if model is None:
            raise ValueError(f"noise {self.name!r} is adversarial and needs a model; none was given")
        if labels is None:
            raise ValueError(f"noise {self.name!r} needs the true labels")
        check_labels(labels, images.shape[0])
        if self.eps == 0:
            return images.clone()
        with attack_mode(model):
            return self.perturb(model, images.detach(), labels.to(images.device), params).detach()

    def perturb(self, model, images, labels, params) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images, labels=None, model=None, *, generator=None) -> torch.Tensor:
        return super().__call__(images, labels, model if model is not None else self.model, generator=generator)


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al., 2015): one l-inf step of size eps.

    Shape: ``N x C x H x W`` in [0, 1] -> same.
    """

    name = "fgsm"

    def perturb(self, model, images, labels, params):
        return (images + self.eps * self.gradient(model, images, labels).sign()).clamp(0, 1)


class PGD(Attack):
    """Projected Gradient Descent (Madry et al., 2018) under the l-inf, l2 or l1 norm.

    Args:
        eps: budget; steps: iterations; rel_stepsize: step as a fraction of eps (foolbox/RobustART default
            0.075 = 3/40 for l-inf and l2; the l1 default follows ART's 120/1600); random_start: start
            uniformly inside the ball; restarts: extra random restarts keeping each sample's worst case.

    Shape: ``N x C x H x W`` in [0, 1] -> same, ``||adv - x||_p <= eps``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float,
        norm: Norm = "linf",
        steps: int = 20,
        rel_stepsize: float | None = None,
        random_start: bool = True,
        restarts: int = 0,
        l1_sparsity: float = 0.99,
        loss: str = "ce",
    ) -> None:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
        self.norm = norm
        self.name = f"pgd_{norm}"
        super().__init__(model, eps=eps, loss=loss)
        if steps < 1:
            raise ValueError(f"{self.name}: steps must be >= 1, got {steps}")
        self.steps = int(steps)
        self.rel_stepsize = float(
            rel_stepsize if rel_stepsize is not None else 2.5 / steps
        )  # Madry et al.: 2.5 eps / steps
        self.random_start = random_start
        self.restarts = int(restarts)
        self.l1_sparsity = l1_sparsity

    @property
    def params(self) -> dict[str, Any]:
        return {
            **super().params,
            "steps": self.steps,
            "rel_stepsize": self.rel_stepsize,
            "random_start": self.random_start,
            "restarts": self.restarts,
        }

    def sample_params(self, shape, generator=None):
        if not self.random_start:
            return {"starts": []}
        return {"starts": [random_start(shape, self.norm, self.eps, generator) for _ in range(1 + self.restarts)]}

    def perturb(self, model, images, labels, params):
        starts = params["starts"] or [torch.zeros_like(images)]
        best = images.clone()
        best_loss = torch.full((images.shape[0],), float("-inf"), device=images.device)
        step = self.rel_stepsize * self.eps
        for start in starts:
            adv = clip_to_box_and_ball(images, images + start.to(images.device), self.norm, self.eps)
            for _ in range(self.steps):
                grad = self.gradient(model, adv, labels)
                adv = clip_to_box_and_ball(
                    images, adv + steepest_step(grad, self.norm, step, self.l1_sparsity), self.norm, self.eps
                )
            with torch.no_grad():
                logits = model(adv)
                # Rank restarts by misclassification first, then by loss.
                score = self.loss_fn(logits, labels) + 1e6 * (logits.argmax(1) != labels).float()
            better = score > best_loss
            best[better] = adv[better]
            best_loss = torch.where(better, score, best_loss)
        return best


class MIM(Attack):
    """Momentum Iterative Method (Dong et al., 2018) under l-inf, as RobustART's ``_mim_whitebox``.

    Args:
        eps: l-inf budget; steps: iterations (20); step_size: per-step size (default eps/steps);
        decay: momentum decay factor (1.0); random_start: uniform start in the ball.
    """

    name = "mim_linf"

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float,
        steps: int = 20,
        step_size: float | None = None,
        decay: float = 1.0,
        random_start: bool = True,
        loss: str = "ce",
    ) -> None:
        super().__init__(model, eps=eps, loss=loss)
        self.steps = int(steps)
        self.step_size = float(step_size if step_size is not None else eps / max(1, steps) * 1.25)
        self.decay = float(decay)
        self.random_start = random_start

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "steps": self.steps, "step_size": self.step_size, "decay": self.decay}

    def sample_params(self, shape, generator=None):
        return {"start": random_start(shape, "linf", self.eps, generator) if self.random_start else None}

    def perturb(self, model, images, labels, params):
        start = params["start"]
        adv = (
            images
            if start is None
            else clip_to_box_and_ball(images, images + start.to(images.device), "linf", self.eps)
        )
        momentum = torch.zeros_like(images)
        for _ in range(self.steps):
            grad = self.gradient(model, adv, labels)
            grad = grad / grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            momentum = self.decay * momentum + grad
            adv = clip_to_box_and_ball(images, adv + self.step_size * momentum.sign(), "linf", self.eps)
        return adv


NOISES.add("fgsm", FGSM, kind=NoiseKind.ADVERSARIAL, norm="linf")
NOISES.add("pgd_linf", lambda model=None, **kw: PGD(model, norm="linf", **kw), kind=NoiseKind.ADVERSARIAL, norm="linf")
NOISES.add("pgd_l2", lambda model=None, **kw: PGD(model, norm="l2", **kw), kind=NoiseKind.ADVERSARIAL, norm="l2")
NOISES.add("pgd_l1", lambda model=None, **kw: PGD(model, norm="l1", **kw), kind=NoiseKind.ADVERSARIAL, norm="l1")
NOISES.add("mim_linf", MIM, kind=NoiseKind.ADVERSARIAL, norm="linf")
