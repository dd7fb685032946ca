"""White-box gradient attacks in pixel space ([0, 1] images), behind the noise registry.

FGSM (Goodfellow et al., 2015), PGD under l-inf, l2 and l1 (Madry et al., 2018; l1 by sparse steepest ascent,
SLIDE of Tramer & Boneh, 2019, with the exact projection onto the intersection of the l1 ball and the [0, 1] box of
Croce & Hein, 2021) and MIM (Dong et al., 2018). Every attack:

- takes ``images`` ``N x C x H x W`` in [0, 1] and int64 ``labels``, and returns adversarial images in [0, 1]
  with ``||adv - images||_p <= eps`` per sample;
- is re-entrant: the model's train/eval mode and ``requires_grad`` flags are restored in ``finally``;
- draws every random number from the ``generator`` it is given (sample, then apply), so a cell replays exactly.

Budgets follow RobustART (:data:`ROBUSTART_BUDGETS`, defined at 3 x 224 x 224) and are carried to other image
sizes by :func:`scale_budget`: l-inf is per pixel and does not change, l2 scales with ``sqrt(d)`` and l1 with ``d``
(``d = C * H * W``), which keeps the per-pixel RMS (l2) and mean (l1) perturbation of RobustART's budgets.

Example:
    >>> attack = PGD(model, eps=8 / 255, norm="linf", steps=10)          # doctest: +SKIP
    >>> adv = attack(images, labels, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustvision.noises.base import NOISES, Noise, NoiseKind
from robustvision.validation import check_labels

# The one threat-model vocabulary of the package: attacks, defences and benchmark selectors all use it.
Norm = Literal["linf", "l2", "l1"]
NORMS: tuple[Norm, ...] = ("linf", "l2", "l1")


def check_norm(norm: str) -> Norm:
    """Return ``norm`` when it is one of linf, l2, l1; otherwise one clear ``ValueError``."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    return norm  # type: ignore[return-value]


# RobustART's three budgets per norm ("small", "medium", "large"), for 3 x 224 x 224 images in [0, 1].
ROBUSTART_BUDGETS: dict[str, tuple[float, float, float]] = {
    "linf": (0.5 / 255, 2 / 255, 8 / 255),
    "l2": (0.5, 2.0, 8.0),
    "l1": (100.0, 400.0, 1600.0),
}
ROBUSTART_DIM = 3 * 224 * 224


def scale_budget(eps: float, norm: str, image_shape: tuple[int, int, int]) -> float:
    """Carry a budget defined at 3 x 224 x 224 to images of ``image_shape`` (C, H, W).

    l-inf budgets are per pixel and unchanged; an l2 budget scales with ``sqrt(d / d_224)`` and an l1 budget with
    ``d / d_224``, so a perturbation of the same per-pixel size gets the same verdict at every resolution.

    Example:
        >>> round(scale_budget(2.0, "l2", (3, 32, 32)), 4)
        0.2857
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    d = math.prod(image_shape)
    if norm == "linf":
        return float(eps)
    if norm == "l2":
        return float(eps) * math.sqrt(d / ROBUSTART_DIM)
    return float(eps) * d / ROBUSTART_DIM


def robustart_budgets(norm: str, image_shape: tuple[int, int, int] = (3, 224, 224)) -> tuple[float, ...]:
    """RobustART's three budgets for ``norm``, scaled to ``image_shape`` by :func:`scale_budget`."""
    if norm not in ROBUSTART_BUDGETS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    return tuple(scale_budget(e, norm, image_shape) for e in ROBUSTART_BUDGETS[norm])


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode without parameter gradients; restore both afterwards, even on error."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, mode in modes:  # restore every submodule, not just the root (some wrappers freeze parts)
            m.training = mode
        model.training = was_training
        for p, flag in flags:
            p.requires_grad_(flag)


def bview(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector to broadcast against a batch shaped like ``like``."""
    return t.view(-1, *([1] * (like.dim() - 1)))


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


def project_l1_box(images: torch.Tensor, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Exact Euclidean projection of ``delta`` onto ``{d : ||d||_1 <= eps, 0 <= images + d <= 1}``.

    The solution is ``d_i = sign(delta_i) * clip(|delta_i| - theta, 0, cap_i)`` with ``cap_i`` the room left in the
    box in the direction of ``delta_i`` and ``theta >= 0`` the smallest value meeting the budget (KKT of the
    separable problem). ``theta`` is found by bisection on the monotone budget function and the upper end is kept,
    so the result is always feasible. Projecting on the ball and then clipping to the box (what l-inf and l2 may do)
    wastes budget under l1; this is the projection APGD-l1 relies on ("Mind the box", Croce & Hein, 2021).

    Args:
        images: the centres ``x`` (``N x ...`` in [0, 1]).
        delta: perturbations to project, same shape.
        eps: l1 radius (a float or a per-sample tensor).
    """
    x = images.flatten(1)
    d = delta.flatten(1)
    cap = torch.where(d >= 0, 1 - x, x).clamp_min(0)
    mag = d.abs()
    eps_t = torch.as_tensor(eps, dtype=d.dtype, device=d.device).expand(d.shape[0]).clone()

    def budget(theta: torch.Tensor) -> torch.Tensor:
        return torch.minimum((mag - theta[:, None]).clamp_min(0), cap).sum(dim=1)

    lo = torch.zeros_like(eps_t)
    hi = mag.amax(dim=1)
    inside = budget(lo) <= eps_t
    for _ in range(40 if d.dtype == torch.float64 else 30):
        mid = (lo + hi) / 2
        over = budget(mid) > eps_t
        lo = torch.where(over, mid, lo)
        hi = torch.where(over, hi, mid)
    theta = torch.where(inside, torch.zeros_like(hi), hi)
    out = d.sign() * torch.minimum((mag - theta[:, None]).clamp_min(0), cap)
    return out.view_as(delta)


def project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Project perturbations onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = lp_norm(delta, "l2").clamp_min(1e-12)
        return delta * bview(torch.clamp(eps / n, max=1.0), delta)
    if norm == "l1":
        return project_l1_ball(delta, eps)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def random_start(shape: torch.Size, norm: str, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """A random start inside the ``norm`` ball, drawn as the reference attacks draw it.

    l-inf: uniform in the cube (foolbox). l2: uniform in the ball, radius ``eps * U^(1/d)`` (foolbox's
    ``uniform_l2_n_balls``). l1: a uniform direction on the l1 sphere (normalised exponentials with random signs)
    at radius ``eps * sqrt(U)`` (ART's ``random_sphere(norm=1)``, which RobustART's PGD-l1 uses).
    """
    device = generator.device if generator is not None else torch.device("cpu")
    if norm == "linf":
        return (torch.rand(shape, generator=generator, device=device) * 2 - 1) * eps
    n, d = shape[0], math.prod(shape[1:])
    if norm == "l2":
        direction = torch.randn(shape, generator=generator, device=device)
        radius = torch.rand(n, generator=generator, device=device) ** (1.0 / d)
    elif norm == "l1":
        mags = torch.empty(shape, device=device).exponential_(generator=generator)
        signs = torch.randint(0, 2, shape, generator=generator, device=device) * 2 - 1
        direction = mags * signs
        radius = torch.rand(n, generator=generator, device=device).sqrt()
    else:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    direction = direction / bview(lp_norm(direction, norm).clamp_min(1e-12), direction)
    return direction * bview(radius, direction) * eps


def l1_topk_direction(
    grad: torch.Tensor, adv: torch.Tensor, k: int, gap: float = 0.05, *, freeze_box: bool = False
) -> torch.Tensor:
    """Sign of the gradient on its ``k`` largest coordinates that can still move inside the box (0 elsewhere).

    The direction of ``pgd_l1_topk`` (Maini et al., 2020). A coordinate is frozen when the gradient pushes it
    outward and it lies within ``gap`` of that bound; with ``freeze_box`` (the reference code's ``l1_dir_topk``)
    coordinates sitting on a bound are frozen whatever the gradient says.
    """
    blocked = ((grad < 0) & (adv <= gap)) | ((grad > 0) & (adv >= 1 - gap))
    if freeze_box:
        blocked = blocked | (adv <= 0) | (adv >= 1)
    g = grad.masked_fill(blocked, 0).flatten(1)
    k = max(1, min(int(k), g.shape[1]))
    kth = g.abs().topk(k, dim=1).values[:, -1:]
    direction = (g.abs() >= kth).to(grad.dtype) * g.sign()  # sign(0) = 0 keeps blocked coordinates still
    return direction.view_as(grad)


def steepest_step(
    grad: torch.Tensor,
    norm: str,
    step: float,
    l1_sparsity: float = 0.99,
    adv: torch.Tensor | None = None,
    *,
    l1_k: int | None = None,
    l1_gap: float = 0.05,
    l1_freeze_box: bool = False,
) -> torch.Tensor:
    """The steepest-ascent step of length ``step`` under ``norm`` (every gradient attack and defence uses it).

    For l1 the step is SLIDE's sparse direction (Tramer & Boneh, 2019): the sign of the gradient on the coordinates
    whose magnitude lies in the top ``1 - l1_sparsity`` share, normalised to l1 length ``step``. When ``adv`` is
    given, coordinates that sit on the [0, 1] box and whose gradient points out of it are left out before the top-k
    choice: a step there would be clipped away (on MNIST most pixels are exactly 0 or 1). With ``l1_k`` the l1
    step is instead ``pgd_l1_topk``'s: ``step / l1_k`` on each of the ``l1_k`` top coordinates of
    :func:`l1_topk_direction` (``adv`` required; ``l1_gap`` and ``l1_freeze_box`` passed on).
    """
    if norm == "linf":
        return step * grad.sign()
    if norm == "l2":
        return step * grad / bview(lp_norm(grad, "l2").clamp_min(1e-12), grad)
    if norm == "l1" and l1_k is not None:
        if adv is None:
            raise ValueError("the top-k l1 step needs the current point adv")
        return (step / l1_k) * l1_topk_direction(grad, adv, l1_k, l1_gap, freeze_box=l1_freeze_box)
    if norm == "l1":
        g = grad
        if adv is not None:
            blocked = ((adv <= 0) & (grad < 0)) | ((adv >= 1) & (grad > 0))
            g = grad.masked_fill(blocked, 0)
        flat = g.flatten(1)
        k = max(1, int(round((1 - l1_sparsity) * flat.shape[1])))
        thresh = flat.abs().topk(k, dim=1).values[:, -1:]
        mask = (flat.abs() >= thresh) & (flat != 0)
        direction = flat.sign() * mask
        direction = direction / direction.abs().sum(dim=1, keepdim=True).clamp_min(1.0)
        return (step * direction).view_as(grad)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def clip_to_box_and_ball(images: torch.Tensor, adv: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Keep ``adv`` inside [0, 1] and inside the ``norm`` ball around ``images``.

    l-inf: the exact projection onto the intersection (the box and the cube are both coordinate-wise). l2: project
    on the ball, then clip, which can only shrink each coordinate, so the result is feasible. l1: the exact
    projection onto the intersection (:func:`project_l1_box`), which keeps the full budget usable.
    """
    if norm == "l1":
        return (images + project_l1_box(images, adv - images, eps)).clamp(0, 1)
    delta = project(adv - images, norm, eps)
    return (images + delta).clamp(0, 1)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CW-style margin ``max_{j != y} z_j - z_y`` per sample (positive once misclassified)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return other - true


def draw_seed(generator: torch.Generator | None) -> int:
    """A 62-bit seed drawn from ``generator`` (or torch's global generator when None).

    The iterative attacks with randomness inside their loop (APGD, Square, AutoAttack) draw one seed in
    ``sample_params`` and build their own CPU generator from it in ``apply``: the cell replays exactly, on any device.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())


class Attack(Noise):
    """Base class of the attacks: a :class:`Noise` of kind adversarial that needs a model.

    Args:
        model: the model to attack; may be given here (``attack(images, labels)``) or per call.
        eps: budget in the attack's norm, in [0, 1] pixel units.
        loss: ``ce`` (cross-entropy) or ``margin`` (CW-style logit margin).
    """

    kind = NoiseKind.ADVERSARIAL
    needs_model = True
    norm: str = "linf"

    def __init__(self, model: nn.Module | None = None, *, eps: float, loss: str = "ce") -> None:
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0 or not math.isfinite(eps):
            raise ValueError(f"{self.name}: eps must be a finite non-negative number, got {eps!r}")
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
        return margin_loss(logits, labels)

    def gradient(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
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
        if self.eps == 0 or images.shape[0] == 0:
            return images.clone()
        with attack_mode(model):
            adv = self.perturb(model, images.detach(), labels.to(images.device), params).detach()
        return adv.to(images.dtype)

    def perturb(self, model, images, labels, params) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images, labels=None, model=None, *, generator=None) -> torch.Tensor:
        return super().__call__(images, labels, model if model is not None else self.model, generator=generator)


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al., 2015): one l-inf step of size eps (foolbox's
    ``LinfFastGradientAttack``, no random start, as RobustART).

    Shape: ``N x C x H x W`` in [0, 1] -> same.
    """

    name = "fgsm"

    def perturb(self, model, images, labels, params):
        return (images + self.eps * self.gradient(model, images, labels).sign()).clamp(0, 1)


class PGD(Attack):
    """Projected Gradient Descent (Madry et al., 2018) under the l-inf, l2 or l1 norm.

    Defaults follow RobustART: 20 steps of ``rel_stepsize * eps`` with ``rel_stepsize = 3/40`` (foolbox's
    ``LinfPGD``/``L2PGD`` as RobustART configures them; its ART PGD-l1 uses ``eps_step = 120`` for ``eps = 1600``,
    the same 0.075) and a random start. Under l1 the step is SLIDE's sparse sign step (see :func:`steepest_step`)
    followed by the exact projection onto the l1 ball intersected with the box; ART's dense l1-normalised gradient
    step, which RobustART used, is far weaker and is not reproduced.

    Args:
        model: the model (or pass it per call).
        eps: budget in ``norm``.
        norm: ``linf``, ``l2`` or ``l1``.
        steps: iterations.
        rel_stepsize: step as a fraction of eps.
        random_start: start uniformly inside the ball.
        restarts: extra random restarts, keeping each sample's misclassified (else highest-loss) result.
        l1_sparsity: share of coordinates left out of each l1 step (0.99: the top 1% move).
        loss: ``ce`` or ``margin``.

    Shape: ``N x C x H x W`` in [0, 1] -> same, ``||adv - x||_p <= eps``.

    Example:
        >>> adv = PGD(model, eps=8 / 255, norm="linf")(images, labels)   # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float,
        norm: Norm = "linf",
        steps: int = 20,
        rel_stepsize: float = 0.075,
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
        if not rel_stepsize > 0:
            raise ValueError(f"{self.name}: rel_stepsize must be > 0, got {rel_stepsize}")
        if restarts < 0:
            raise ValueError(f"{self.name}: restarts must be >= 0, got {restarts}")
        if not 0 <= l1_sparsity < 1:
            raise ValueError(f"{self.name}: l1_sparsity must lie in [0, 1), got {l1_sparsity}")
        self.steps = int(steps)
        self.rel_stepsize = float(rel_stepsize)
        self.random_start = random_start
        self.restarts = int(restarts)
        self.l1_sparsity = float(l1_sparsity)

    @property
    def params(self) -> dict[str, Any]:
        extra = {"l1_sparsity": self.l1_sparsity} if self.norm == "l1" else {}
        return {
            **super().params,
            "steps": self.steps,
            "rel_stepsize": self.rel_stepsize,
            "random_start": self.random_start,
            "restarts": self.restarts,
            **extra,
        }

    def sample_params(self, shape, generator=None):
        if not self.random_start:
            return {"starts": []}
        return {"starts": [random_start(shape, self.norm, self.eps, generator) for _ in range(1 + self.restarts)]}

    def perturb(self, model, images, labels, params):
        starts = params["starts"] or [torch.zeros_like(images)]
        best = images.clone()
        best_score = torch.full((images.shape[0],), float("-inf"), device=images.device)
        step = self.rel_stepsize * self.eps
        for start in starts:
            adv = clip_to_box_and_ball(images, images + start.to(images.device), self.norm, self.eps)
            for _ in range(self.steps):
                grad = self.gradient(model, adv, labels)
                move = steepest_step(grad, self.norm, step, self.l1_sparsity, adv=adv)
                adv = clip_to_box_and_ball(images, adv + move, self.norm, self.eps)
            if len(starts) == 1:  # nothing to rank: skip the extra forward pass
                return adv
            with torch.no_grad():
                logits = model(adv)
                # Rank restarts by misclassification first, then by loss.
                score = self.loss_fn(logits, labels) + 1e6 * (logits.argmax(1) != labels).float()
            better = score > best_score
            best[better] = adv[better]
            best_score = torch.where(better, score, best_score)
        return best


class MIM(Attack):
    """Momentum Iterative Method (Dong et al., 2018) under l-inf, as RobustART's ``_mim_whitebox``.

    The gradient is normalised by its mean absolute value before the momentum update, the step is the sign of the
    momentum. RobustART fixes ``step_size = 0.002`` for every eps (0.25 eps per step at 8/255, a full eps at
    0.5/255); here the default scales with eps to keep its 8/255 ratio (``1.25 * eps / steps`` with 20 steps).

    Args:
        eps: l-inf budget; steps: iterations (20); step_size: per-step size (default ``1.25 * eps / steps``);
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
        if steps < 1:
            raise ValueError(f"{self.name}: steps must be >= 1, got {steps}")
        self.steps = int(steps)
        self.step_size = float(step_size if step_size is not None else 1.25 * eps / steps)
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
            grad = grad / bview(grad.abs().flatten(1).mean(1).clamp_min(1e-12), grad)
            momentum = self.decay * momentum + grad
            adv = clip_to_box_and_ball(images, adv + self.step_size * momentum.sign(), "linf", self.eps)
        return adv


def _register() -> None:
    adv = NoiseKind.ADVERSARIAL
    NOISES.add("fgsm", FGSM, kind=adv, family="gradient", norm="linf", paper="Goodfellow et al. 2015")
    for norm in NORMS:
        NOISES.add(
            f"pgd_{norm}",
            functools.partial(PGD, norm=norm),
            kind=adv,
            family="gradient",
            norm=norm,
            paper="Madry et al. 2018" + (" + SLIDE (Tramer & Boneh 2019)" if norm == "l1" else ""),
        )
    NOISES.add("mim_linf", MIM, kind=adv, family="gradient", norm="linf", paper="Dong et al. 2018")


_register()
