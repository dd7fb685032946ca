"""Gradient-masking health checks: is a robust accuracy the model's, or the attack's weakness?

A robustness number is only as good as the attack behind it. A model that hides its gradients (a ReLU or a large
temperature on its logits, a non-differentiable input transform) looks robust to PGD without being robust. These
checks follow the checklist of Carlini et al. 2019 ("On Evaluating Adversarial Robustness", arXiv:1902.06705, §5)
and Athalye et al. 2018 ("Obfuscated Gradients Give a False Sense of Security"), and AutoAttack's automatic flags
(Croce & Hein 2020, ``autoattack/checks.py``). Each check runs the project's own attacks (:mod:`robustvision.noises`)
and gives a ``pass`` / ``warn`` verdict with its numbers:

========================  =============================================================================
``eps_monotone``          PGD robust accuracy does not rise as eps grows (eps/4, eps/2, eps, 2 eps, 1).
``unbounded``             PGD with an unbounded budget (l-inf eps = 1) leaves about 0 % accuracy.
``more_steps``            5x the PGD steps finds at most ``tolerance`` more adversarial points.
``restarts``              5 extra random restarts find at most ``tolerance`` more.
``larger_step``           a larger step (eps/4, torchattacks' default, or twice the reference's) likewise.
``apgd_dlr``              APGD with the scale-invariant DLR loss likewise (needs >= 3 classes).
``square``                the black-box Square attack (no gradients) likewise.
``transfer``              PGD crafted on a surrogate model and transferred likewise (needs a surrogate).
``gradients``             the loss gradient is finite and non-zero on most inputs.
========================  =============================================================================

Every comparison is paired: a stronger attack runs on the points the reference PGD left correct, with the same
random start where it has one, and the verdict counts the points it alone breaks ("found more"), so two figures
measured on different samples are never compared.

The checks ask about the *model* (does it mask gradients?), so they compare against a well-tuned **reference
PGD**: 20 steps of 2.5 eps / steps (0.125 eps) with one uniform random start and cross-entropy, at l-inf eps 8/255.
The step is the rule of thumb of Madry et al. 2018 ("Towards Deep Learning Models Resistant to Adversarial
Attacks"; also the default of MadryLab's ``robustness`` library): a total path of 2.5 eps lets PGD cross the ball
from any start and still refine near its edge. A standard model on which this PGD has converged passes; a masked
model still fails (eps = 1, Square, transfer or the gradient check beat PGD).

Whether the *benchmark's* default attack (RobustART's PGD-20 with a step of 0.075 eps, or the bench's PGD-10) is
strong enough is a separate question, answered by an ``info`` figure rather than a warning: the **default attack
gap**, the default PGD's robust accuracy minus the worst case over every attack run (:attr:`CheckReport.default_gap`).

Example:
    >>> from robustvision import checks
    >>> report = checks.run(model, (images, labels))                  # doctest: +SKIP
    >>> report.healthy, report.failed                                 # doctest: +SKIP
    (True, [])
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustvision.noises.adversarial import PGD, attack_mode
from robustvision.noises.apgd import APGD
from robustvision.noises.square import SquareAttack
from robustvision.registry import Registry
from robustvision.runtime import make_generator
from robustvision.validation import check_images, check_labels

Verdict = Literal["pass", "warn", "skip"]
VERDICTS: tuple[str, ...] = ("pass", "warn", "skip")


#: Madry et al.'s rule of thumb for the PGD step: ``MADRY_STEP_FACTOR * eps / steps`` (a total path of 2.5 eps).
MADRY_STEP_FACTOR = 2.5


@dataclass(frozen=True)
class CheckConfig:
    """The settings of a check run (all budgets l-inf, in [0, 1] pixel units).

    Args:
        eps: the budget under test (RobustART's large l-inf budget, 8/255).
        steps: steps of the reference PGD every check compares with (20).
        rel_stepsize: the reference PGD's step as a fraction of eps; ``None``: Madry et al.'s ``2.5 / steps``.
        default_steps: steps of the benchmark's default PGD, measured for the default attack gap (RobustART: 20;
            0: not measured, e.g. inside ``bench``, which stores its own PGD figure).
        default_rel_stepsize: the default PGD's step as a fraction of eps (RobustART: 0.075).
        n_examples: images checked (a prefix of the data given).
        batch_size: images per forward/backward pass.
        seed: base seed; each attack's generator derives from it and the attack's key.
        tolerance: the largest accepted gain of a stronger attack, in accuracy (0.03 = 3 points); also the
            largest accepted rise of accuracy along the eps grid.
        unbounded_max_accuracy: the largest accepted accuracy under the unbounded budget.
        max_bad_gradients: the largest accepted share of inputs with a zero or non-finite gradient.
        eps_grid: multiples of ``eps`` for the monotonicity check (eps = 1 is always added last).
        step_factor: ``more_steps`` runs ``step_factor x steps`` steps.
        restarts: extra random restarts of the ``restarts`` check.
        large_rel_stepsize: the step of ``larger_step``, as a fraction of eps (torchattacks' default eps/4); twice the
            reference step where that is larger.
        apgd_steps: APGD-DLR iterations (AutoAttack: 100).
        square_queries: Square queries per point (AutoAttack: 5000).
    """

    eps: float = 8 / 255
    steps: int = 20
    rel_stepsize: float | None = None
    default_steps: int = 20
    default_rel_stepsize: float = 0.075
    n_examples: int = 100
    batch_size: int = 100
    seed: int = 0
    tolerance: float = 0.03
    unbounded_max_accuracy: float = 0.03
    max_bad_gradients: float = 0.05
    eps_grid: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    step_factor: int = 5
    restarts: int = 5
    large_rel_stepsize: float = 0.25
    apgd_steps: int = 100
    square_queries: int = 1000

    def validate(self) -> CheckConfig:
        """Check ranges; raises ``ValueError`` naming the bad field."""
        if not 0 < self.eps <= 1:
            raise ValueError(f"check eps must lie in (0, 1] (l-inf, [0, 1] pixels), got {self.eps:g}")
        for name in ("steps", "n_examples", "batch_size", "step_factor", "apgd_steps", "square_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"check {name} must be >= 1, got {getattr(self, name)}")
        if self.default_steps < 0:
            raise ValueError(f"check default_steps must be >= 0 (0: not measured), got {self.default_steps}")
        if self.restarts < 1:
            raise ValueError(f"check restarts must be >= 1, got {self.restarts}")
        for name in ("tolerance", "unbounded_max_accuracy", "max_bad_gradients"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"check {name} must lie in [0, 1), got {getattr(self, name)}")
        if not self.eps_grid or any(not m > 0 for m in self.eps_grid):
            raise ValueError(f"check eps_grid must be positive multiples of eps, got {self.eps_grid}")
        steps = (self.reference_rel_stepsize, self.default_rel_stepsize, self.large_rel_stepsize)
        if not all(s > 0 for s in steps):
            raise ValueError("check step sizes must be > 0")
        return self

    @property
    def reference_rel_stepsize(self) -> float:
        """The reference PGD's step as a fraction of eps: ``rel_stepsize``, else Madry et al.'s ``2.5 / steps``."""
        return float(self.rel_stepsize) if self.rel_stepsize is not None else MADRY_STEP_FACTOR / self.steps

    @property
    def larger_rel_stepsize(self) -> float:
        """The ``larger_step`` check's step: ``large_rel_stepsize`` or twice the reference step, whichever is larger."""
        return max(self.large_rel_stepsize, 2 * self.reference_rel_stepsize)

    def replace(self, **changes: Any) -> CheckConfig:
        """A copy with ``changes`` applied (``None`` values ignored), validated."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None}).validate()


#: The cheap subset the benchmark runs on every model, with its reduced settings (see docs/health-checks.md).
CHEAP_CHECKS: tuple[str, ...] = ("gradients", "unbounded", "eps_monotone", "apgd_dlr", "square")
CHEAP_SETTINGS: dict[str, Any] = {"apgd_steps": 10, "square_queries": 50, "eps_grid": (0.5, 1.0)}


@dataclass
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: the check's registered name.
        verdict: ``pass``, ``warn`` or ``skip`` (the check could not run, e.g. no surrogate).
        message: one line saying what was measured.
        numbers: the figures behind the verdict (accuracies as fractions in [0, 1]).
        attack: the attack the figures come from, in words (for the card).
        correct: per-sample correctness under the check's attack combined with the default PGD (``None`` when the
            check runs no attack at the tested eps); used for the worst-case robust accuracy.
        seconds: wall time of the check (its share of shared work is counted where it is first computed).
    """

    name: str
    verdict: Verdict
    message: str
    numbers: dict[str, float] = field(default_factory=dict)
    attack: str = ""
    correct: np.ndarray | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict != "warn"


@dataclass
class CheckReport:
    """Every check's result for one model, with the config and the shared figures.

    Attributes:
        pgd_accuracy: robust accuracy under the reference PGD (the attack every check compares with).
        pgd_correct: its per-sample correctness.
        default_accuracy: robust accuracy under the benchmark's default PGD (``None`` when not measured).
        default_correct: its per-sample correctness (``None`` when not measured).
    """

    results: list[CheckResult]
    config: CheckConfig
    clean_accuracy: float
    pgd_accuracy: float
    n: int
    seconds: float
    pgd_correct: np.ndarray
    default_accuracy: float | None = None
    default_correct: np.ndarray | None = None

    @property
    def failed(self) -> list[str]:
        """Names of the checks that warn."""
        return [r.name for r in self.results if r.verdict == "warn"]

    @property
    def healthy(self) -> bool:
        return not self.failed

    def get(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"check {name!r} was not run (ran: {', '.join(r.name for r in self.results)})")

    def worst_case_correct(self) -> np.ndarray:
        """Per-sample correctness under every attack run at ``config.eps`` (reference and default PGD included)."""
        out = self.pgd_correct.copy()
        if self.default_correct is not None:
            out &= self.default_correct
        for r in self.results:
            if r.correct is not None:
                out &= r.correct
        return out

    @property
    def worst_case_accuracy(self) -> float:
        return float(self.worst_case_correct().mean())

    @property
    def reference_attack(self) -> str:
        """The reference PGD, in words."""
        cfg = self.config
        return f"PGD-{cfg.steps} (step {cfg.reference_rel_stepsize:.3g} eps, one random start)"

    @property
    def default_attack(self) -> str:
        """The benchmark's default PGD, in words ("" when not measured)."""
        cfg = self.config
        if self.default_accuracy is None:
            return ""
        return f"PGD-{cfg.default_steps} (step {cfg.default_rel_stepsize:.3g} eps)"

    @property
    def default_gap(self) -> float | None:
        """The default attack gap: default PGD robust accuracy minus the worst case over every attack run.

        Both on the same images; ``None`` when the default PGD was not measured. An ``info`` figure about the
        benchmark's attack, not a verdict on the model.
        """
        if self.default_accuracy is None:
            return None
        return self.default_accuracy - self.worst_case_accuracy

    def default_gap_message(self) -> str:
        """One line on the default attack gap ("" when the default PGD was not measured)."""
        gap = self.default_gap
        if gap is None:
            return ""
        worst = self.worst_case_accuracy
        line = (
            f"default attack gap {100 * gap:.1f} points: the default {self.default_attack} leaves "
            f"{_pct(self.default_accuracy or 0.0)}, the worst case over every attack {_pct(worst)}"
        )
        if gap > self.config.tolerance + 1e-9:
            line += " (the default attack overstates this model's robustness; not a health warning)"
        return line

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per check (name, verdict, message, numbers), for tables and JSON."""
        return [
            {"check": r.name, "verdict": r.verdict, "message": r.message, "seconds": r.seconds, **r.numbers}
            for r in self.results
        ]


# --------------------------------------------------------------------------------------------------- context
class CheckContext:
    """What the checks share: the model, the data, the config and the cached reference-PGD result."""

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        config: CheckConfig,
        surrogate: nn.Module | None = None,
    ) -> None:
        self.model = model
        self.images = images
        self.labels = labels
        self.config = config
        self.surrogate = surrogate
        self.n = int(labels.shape[0])
        self._cache: dict[str, np.ndarray] = {}
        self.num_classes: int | None = None

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        if p is not None:
            return p.device
        b = next(iter(self.model.buffers()), None)
        return b.device if b is not None else torch.device("cpu")

    @torch.no_grad()
    def predict(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        model = model or self.model
        out = []
        for i in range(0, len(x), self.config.batch_size):
            logits = model(x[i : i + self.config.batch_size].to(self.device))
            if self.num_classes is None:
                self.num_classes = int(logits.shape[1])
            out.append(logits.argmax(1).cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)

    def clean_correct(self) -> np.ndarray:
        if "clean" not in self._cache:
            was = self.model.training
            self.model.eval()
            try:
                self._cache["clean"] = (self.predict(self.images) == self.labels).numpy()
            finally:
                self.model.train(was)
        return self._cache["clean"]

    def attack_correct(
        self,
        key: str,
        attack: Any,
        *,
        only: np.ndarray | None = None,
        seed_key: str | None = None,
        craft_on: nn.Module | None = None,
    ) -> np.ndarray:
        """Per-sample correctness of the model on the attack's images (cached by ``key``).

        Args:
            key: cache key of this result.
            attack: an :class:`~robustvision.noises.adversarial.Attack` (its ``sample_params`` / ``apply``).
            only: a boolean mask; only these points are attacked, the others count as already broken (False).
            seed_key: the generator key (default ``key``): attacks sharing it draw the same random start for a
                point, whether run on every point or a subset.
            craft_on: craft on this model instead (transfer), evaluate on the checked model.
        """
        if key in self._cache:
            return self._cache[key]
        g = make_generator(self.config.seed, "check", seed_key or key)
        correct = np.zeros(self.n, dtype=bool)
        bs = self.config.batch_size
        for start in range(0, self.n, bs):
            stop = min(start + bs, self.n)
            x = self.images[start:stop].to(self.device)
            y = self.labels[start:stop].to(self.device)
            # Draw for the whole batch, then keep the rows attacked: a point's random start does not depend on
            # which other points are attacked, so a variant run on the survivors meets the same start.
            params = attack.sample_params(x.shape, g)
            sel = np.ones(stop - start, dtype=bool) if only is None else only[start:stop]
            if not sel.any():
                continue
            rows = torch.from_numpy(np.flatnonzero(sel))
            sub = _select_params(params, rows.to(x.device), x.shape[0])
            adv = attack.apply(x[rows], sub, labels=y[rows], model=craft_on or self.model)
            with torch.no_grad(), _eval(self.model):
                pred = self.model(adv).argmax(1)
            correct[start + rows.numpy()] = (pred == y[rows]).cpu().numpy()
        self._cache[key] = correct
        return correct

    def pgd(self, eps: float, **overrides: Any) -> PGD:
        """The reference PGD at ``eps`` (``overrides`` change its settings)."""
        cfg = self.config
        kw: dict[str, Any] = {"eps": eps, "steps": cfg.steps, "rel_stepsize": cfg.reference_rel_stepsize, **overrides}
        return PGD(None, norm="linf", **kw)

    def reference_correct(self) -> np.ndarray:
        """Correctness under the reference PGD at ``config.eps`` (clean-wrong points count as broken)."""
        return self.attack_correct("pgd", self.pgd(self.config.eps), only=self.clean_correct())

    def default_pgd_correct(self) -> np.ndarray | None:
        """Correctness under the benchmark's default PGD at ``config.eps`` (``None`` when ``default_steps`` is 0).

        It starts from the reference's random start, so the two are paired.
        """
        cfg = self.config
        if cfg.default_steps == 0:
            return None
        if cfg.default_steps == cfg.steps and math.isclose(cfg.default_rel_stepsize, cfg.reference_rel_stepsize):
            return self.reference_correct()
        attack = self.pgd(cfg.eps, steps=cfg.default_steps, rel_stepsize=cfg.default_rel_stepsize)
        return self.attack_correct("default_pgd", attack, only=self.clean_correct(), seed_key="pgd")


class _eval:
    """Eval mode for a forward pass, restored afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.was = self.model.training
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was)


def _select_params(params: dict[str, Any], rows: torch.Tensor, n: int) -> dict[str, Any]:
    """Keep the rows of every per-sample tensor in an attack's drawn parameters (seeds pass through)."""

    def pick(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n:
            return v[rows.to(v.device)]
        if isinstance(v, list):
            return [pick(i) for i in v]
        return v

    return {k: pick(v) for k, v in params.items()}


# ---------------------------------------------------------------------------------------------------- checks
CheckFn = Callable[[CheckContext], CheckResult]
CHECKS: Registry[CheckResult] = Registry("check")


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _stronger(ctx: CheckContext, name: str, label: str, key: str, attack: Any, seed_key: str | None = None):
    """Shared body of the "a stronger attack does not find much more" checks."""
    base = ctx.reference_correct()
    variant = ctx.attack_correct(key, attack, only=base, seed_key=seed_key)
    combined = base & variant
    acc, acc2 = float(base.mean()), float(combined.mean())
    drop = acc - acc2
    verdict: Verdict = "warn" if drop > ctx.config.tolerance + 1e-9 else "pass"
    msg = (
        f"{label} finds {100 * drop:.1f} points more than the reference PGD (robust accuracy {_pct(acc)} -> "
        f"{_pct(acc2)}; "
        f"threshold {100 * ctx.config.tolerance:.0f} points)"
    )
    numbers = {"pgd_accuracy": acc, "robust_accuracy": acc2, "drop": drop}
    return CheckResult(name, verdict, msg, numbers, attack=label, correct=combined)


@CHECKS.register("more_steps", cheap=False, description="x5 PGD steps find no more than the tolerance")
def check_more_steps(ctx: CheckContext) -> CheckResult:
    steps = ctx.config.steps * ctx.config.step_factor
    attack = ctx.pgd(ctx.config.eps, steps=steps)
    label = f"PGD-{steps} (step {ctx.config.reference_rel_stepsize:.3g} eps)"
    return _stronger(ctx, "more_steps", label, "more_steps", attack, seed_key="pgd")


@CHECKS.register("restarts", cheap=False, description="5 extra random restarts find no more than the tolerance")
def check_restarts(ctx: CheckContext) -> CheckResult:
    r = ctx.config.restarts
    attack = ctx.pgd(ctx.config.eps, restarts=r)
    label = f"PGD-{ctx.config.steps} with {r} restarts"
    return _stronger(ctx, "restarts", label, "restarts", attack, seed_key="pgd")


@CHECKS.register("larger_step", cheap=False, description="a larger PGD step finds no more than the tolerance")
def check_larger_step(ctx: CheckContext) -> CheckResult:
    rel = ctx.config.larger_rel_stepsize
    attack = ctx.pgd(ctx.config.eps, rel_stepsize=rel)
    label = f"PGD-{ctx.config.steps} with step {rel:g} eps"
    return _stronger(ctx, "larger_step", label, "larger_step", attack, seed_key="pgd")


@CHECKS.register("apgd_dlr", cheap=True, description="APGD-DLR (scale-invariant loss) finds no more")
def check_apgd_dlr(ctx: CheckContext) -> CheckResult:
    ctx.clean_correct()
    if (ctx.num_classes or 0) < 3:
        return CheckResult("apgd_dlr", "skip", f"APGD-DLR needs >= 3 classes; the model has {ctx.num_classes}")
    attack = APGD(None, eps=ctx.config.eps, norm="linf", loss="dlr", steps=ctx.config.apgd_steps)
    return _stronger(ctx, "apgd_dlr", f"APGD-DLR ({ctx.config.apgd_steps} steps)", "apgd_dlr", attack)


@CHECKS.register("square", cheap=True, description="the black-box Square attack finds no more")
def check_square(ctx: CheckContext) -> CheckResult:
    q = ctx.config.square_queries
    attack = SquareAttack(None, eps=ctx.config.eps, n_queries=q)
    return _stronger(ctx, "square", f"Square ({q} queries, black-box)", "square", attack)


@CHECKS.register("transfer", cheap=False, description="PGD transferred from a surrogate is not stronger")
def check_transfer(ctx: CheckContext) -> CheckResult:
    if ctx.surrogate is None:
        return CheckResult("transfer", "skip", "no surrogate model given (check --surrogate MODEL)")
    surrogate = ctx.surrogate.to(ctx.device)
    label = f"PGD-{ctx.config.steps} transferred from {getattr(surrogate, 'arch', type(surrogate).__name__)}"
    base = ctx.reference_correct()
    transfer = ctx.attack_correct("transfer", ctx.pgd(ctx.config.eps), only=base, craft_on=surrogate)
    combined = base & transfer
    acc, acc2 = float(base.mean()), float(combined.mean())
    drop = acc - acc2
    verdict: Verdict = "warn" if drop > ctx.config.tolerance + 1e-9 else "pass"
    msg = (
        f"transfer from the surrogate finds {100 * drop:.1f} points the white-box reference PGD missed (robust "
        f"accuracy {_pct(acc)} -> {_pct(acc2)}; threshold {100 * ctx.config.tolerance:.0f} points)"
    )
    return CheckResult("transfer", verdict, msg, {"pgd_accuracy": acc, "robust_accuracy": acc2, "drop": drop}, label)


def _grid(ctx: CheckContext) -> list[float]:
    eps = ctx.config.eps
    grid = sorted({min(1.0, m * eps) for m in ctx.config.eps_grid} | {1.0})
    return grid


def _grid_accuracy(ctx: CheckContext, eps: float) -> float:
    if math.isclose(eps, ctx.config.eps):
        return float(ctx.reference_correct().mean())
    return float(ctx.attack_correct(f"pgd@{eps:.6g}", ctx.pgd(eps), only=ctx.clean_correct()).mean())


@CHECKS.register("eps_monotone", cheap=True, description="PGD accuracy does not rise as eps grows")
def check_eps_monotone(ctx: CheckContext) -> CheckResult:
    grid = _grid(ctx)
    accs = [float(ctx.clean_correct().mean())] + [_grid_accuracy(ctx, e) for e in grid]
    epss = [0.0, *grid]
    rises = [(epss[i + 1], accs[i + 1] - accs[i]) for i in range(len(accs) - 1)]
    worst_eps, worst = max(rises, key=lambda t: t[1])
    curve = ", ".join(f"{e * 255:.3g}/255: {100 * a:.1f}" for e, a in zip(epss, accs, strict=True))
    numbers = {f"accuracy@{e:.6g}": a for e, a in zip(epss, accs, strict=True)}
    numbers["largest_rise"] = max(0.0, worst)
    if worst > ctx.config.tolerance + 1e-9:
        msg = f"accuracy rises by {100 * worst:.1f} points at eps {worst_eps * 255:.3g}/255 (PGD, %: {curve})"
        return CheckResult("eps_monotone", "warn", msg, numbers, attack="PGD over an eps grid")
    msg = f"accuracy falls monotonically with eps (PGD, %: {curve})"
    return CheckResult("eps_monotone", "pass", msg, numbers, attack="PGD over an eps grid")


@CHECKS.register("unbounded", cheap=True, description="PGD with eps = 1 leaves about 0 % accuracy")
def check_unbounded(ctx: CheckContext) -> CheckResult:
    acc = _grid_accuracy(ctx, 1.0)
    limit = ctx.config.unbounded_max_accuracy
    numbers = {"robust_accuracy": acc, "limit": limit}
    if acc > limit + 1e-9:
        msg = f"PGD with an unbounded budget (eps = 1) leaves {_pct(acc)} accuracy (expected <= {_pct(limit)})"
        return CheckResult("unbounded", "warn", msg, numbers, attack="PGD, eps = 1")
    msg = f"PGD with an unbounded budget (eps = 1) leaves {_pct(acc)} accuracy"
    return CheckResult("unbounded", "pass", msg, numbers, attack="PGD, eps = 1")


@CHECKS.register("gradients", cheap=True, description="the loss gradient is finite and non-zero on most inputs")
def check_gradients(ctx: CheckContext) -> CheckResult:
    finite = np.zeros(ctx.n, dtype=bool)
    nonzero = np.zeros(ctx.n, dtype=bool)
    bs = ctx.config.batch_size
    with attack_mode(ctx.model):
        for start in range(0, ctx.n, bs):
            x = ctx.images[start : start + bs].to(ctx.device).detach().requires_grad_(True)
            y = ctx.labels[start : start + bs].to(ctx.device)
            with torch.enable_grad():
                # The loss PGD ascends (summed, so each row of the gradient is that sample's own).
                loss = F.cross_entropy(ctx.model(x), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x)
            flat = grad.flatten(1)
            finite[start : start + bs] = torch.isfinite(flat).all(1).cpu().numpy()
            nonzero[start : start + bs] = (flat != 0).any(1).cpu().numpy()
    good = finite & nonzero
    bad = 1.0 - float(good.mean()) if ctx.n else 0.0
    numbers = {"finite": float(finite.mean()), "nonzero": float((nonzero & finite).mean()), "bad": bad}
    detail = f"{_pct(1 - float(finite.mean()))} non-finite, {_pct(float((finite & ~nonzero).mean()))} exactly zero"
    if bad > ctx.config.max_bad_gradients + 1e-9:
        msg = f"the cross-entropy gradient is unusable on {_pct(bad)} of inputs ({detail})"
        return CheckResult("gradients", "warn", msg, numbers, attack="input gradient of the CE loss")
    msg = f"the cross-entropy gradient is finite and non-zero on {_pct(1 - bad)} of inputs ({detail})"
    return CheckResult("gradients", "pass", msg, numbers, attack="input gradient of the CE loss")


# Registration order is the order of a full run; listed here once so the report and the card agree.
CHECK_ORDER: tuple[str, ...] = (
    "gradients",
    "unbounded",
    "eps_monotone",
    "more_steps",
    "restarts",
    "larger_step",
    "apgd_dlr",
    "square",
    "transfer",
)


def list_checks(cheap: bool | None = None) -> list[str]:
    """Names of the checks in run order (``cheap=True``: the benchmark's subset)."""
    if cheap is None:
        return list(CHECK_ORDER)
    return [n for n in CHECK_ORDER if CHECKS.meta(n)["cheap"] == cheap]


def _data(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    elif hasattr(data, "tensors"):
        images, labels = data.tensors()
    else:
        raise TypeError("data must be (images, labels) tensors or a data set with .tensors()")
    check_images(images)
    check_labels(labels, int(images.shape[0]))
    return images, labels


def run(
    model: nn.Module,
    data: Any,
    *,
    checks: Sequence[str] | None = None,
    config: CheckConfig | None = None,
    surrogate: nn.Module | None = None,
    progress: Callable[[str], None] | None = None,
) -> CheckReport:
    """Run health checks on ``model``.

    Args:
        model: maps ``N x C x H x W`` images in [0, 1] to logits.
        data: ``(images, labels)`` or a data set with ``.tensors()``; the first ``config.n_examples`` are used.
        checks: names to run, in any order (default: every check, :data:`CHECK_ORDER`); unknown names suggest
            close ones.
        config: settings (default :class:`CheckConfig`).
        surrogate: a model to craft transfer attacks on (the ``transfer`` check is skipped without one).
        progress: called with each check's name before it runs.

    Returns:
        A :class:`CheckReport`; ``report.failed`` names the checks that warn, ``report.default_gap`` is the
        default attack gap (an ``info`` figure, not a warning).

    Example:
        >>> report = run(model, (images, labels), checks=["gradients", "square"])   # doctest: +SKIP
    """
    config = (config or CheckConfig()).validate()
    names = list(checks) if checks is not None else list(CHECK_ORDER)
    for name in names:
        CHECKS.get(name)  # unknown names fail before any work
    names = [n for n in CHECK_ORDER if n in names] + [n for n in names if n not in CHECK_ORDER]
    images, labels = _data(data)
    n = min(config.n_examples, int(labels.shape[0]))
    if n == 0:
        raise ValueError("no images to check")
    ctx = CheckContext(model, images[:n], labels[:n], config, surrogate)
    t0 = time.perf_counter()
    clean = float(ctx.clean_correct().mean())
    results = []
    for name in names:
        if progress is not None:
            progress(name)
        t = time.perf_counter()
        res = CHECKS.get(name)(ctx)
        res.seconds = time.perf_counter() - t
        results.append(res)
    pgd = ctx.reference_correct()
    default = ctx.default_pgd_correct()
    return CheckReport(
        results,
        config,
        clean,
        float(pgd.mean()),
        n,
        time.perf_counter() - t0,
        pgd,
        default_accuracy=None if default is None else float(default.mean()),
        default_correct=default,
    )
