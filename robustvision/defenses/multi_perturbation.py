"""Multi-perturbation training objectives behind one registry: GBN, AVG, MAX, MSD, E-AT, per-norm PGD-AT, standard.

Every method turns a clean batch into ``(classification loss, gate loss or None)`` for one optimisation step:

- ``standard``: cross-entropy on clean images.
- ``pgd_linf`` / ``pgd_l2`` / ``pgd_l1``: vanilla adversarial training on one norm (Madry et al., 2018).
- ``avg``: the mean of the per-norm PGD losses (Tramer & Boneh, 2019; "PGD Aug" in the MSD tables), plus the
  clean loss when the recipe asks for it (the GBN reference code's ``train_lenet_AVG.py`` does).
- ``max``: per example, the highest-loss of the three PGD examples (Tramer & Boneh, 2019; "Worst-PGD").
- ``msd``: Multi Steepest Descent examples (Maini et al., 2020).
- ``eat``: E-AT (Croce & Hein, ICML 2022): each batch is adversarially trained against one norm, alternating l1 and
  l-inf from batch to batch (the l1 and l-inf extremes cover l2 in between).
- ``gbn``: Gated Batch Normalization (Liu et al., 2020): one adversarial batch per norm, each attacking *its own*
  branch; the mean of the per-domain cross-entropies (clean included when the model has a clean branch), plus the
  gates' domain cross-entropy summed over GBN layers and averaged over domains, stepped by a gate-only optimiser.
  With ``gate_adversary="mixture"`` (not in the paper) each norm also gets a batch crafted end to end against the
  gated mixture; it trains the gates (target: its norm) and that norm's branch, so gates and branches see the
  examples the end-to-end adversary will make at test time.

Attacks are built with the model in eval mode and parameter gradients off (their BN statistics are not
touched); losses are computed in train mode. Training attacks follow :class:`AttackSettings`: the ``fast`` recipe
(few steps, random start, step relative to eps) or the reference code's (:func:`reference_attack`: per-norm
iterations and step sizes, zero or sphere start, and each example stops moving once it is misclassified).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustvision.defenses.attacks import NORMS, check_norm, lp_pgd, msd_perturb
from robustvision.defenses.gbn import collect_gate_logits, model_domains, route_domain
from robustvision.noises.adversarial import attack_mode, bview, lp_norm, random_start
from robustvision.registry import Registry

# Perturbation budgets in [0, 1] pixel units (the GBN and MSD papers and their code).
BUDGETS: dict[str, dict[str, float]] = {
    "mnist": {"l1": 10.0, "l2": 2.0, "linf": 0.3},
    "cifar10": {"l1": 12.0, "l2": 0.5, "linf": 8 / 255},
}


def budgets_for(dataset: str, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The budget table of ``dataset`` (MNIST's for unknown sets, which are then expected to override)."""
    table = dict(BUDGETS.get(dataset, BUDGETS["mnist"]))
    for norm, eps in (overrides or {}).items():
        check_norm(norm)
        if not eps > 0:
            raise ValueError(f"the {norm} budget must be positive, got {eps}")
        table[norm] = float(eps)
    return table


START_KINDS: tuple[str, ...] = ("zero", "uniform", "sphere")
GATE_ADVERSARIES: tuple[str, ...] = ("branch", "mixture")

# The reference code's training attacks (liuaishan/GBN mnist_funcs.py, from locuslab/robust_union):
# norm -> (iterations, step per iteration, start). l2 starts on the eps sphere (its ``if random:`` tests the module).
REFERENCE_ATTACKS: dict[str, tuple[int, float, str]] = {
    "linf": (50, 0.01, "zero"),
    "l2": (100, 0.1, "sphere"),
    "l1": (50, 1.0, "zero"),
}
# MSD's MNIST settings (robust_union): 100 iterations, steps (l-inf, l2, l1) = (0.01, 0.1, 1.0).
REFERENCE_MSD: tuple[int, dict[str, float]] = (100, {"linf": 0.01, "l2": 0.1, "l1": 1.0})


@dataclass
class AttackSettings:
    """How training attacks are built (the same for every method, so budgets of attack steps match).

    Attributes:
        steps: iterations of every training attack without a ``per_norm`` entry, and of MSD.
        rel_step: per-iteration step as a multiple of ``eps / steps`` (2.5: Madry et al.).
        random_start: l-inf and l2 PGD start at a uniform point of the ball (l1 starts at the image, as the
            reference code does).
        l1_k_range: coordinates moved per l1 step, drawn uniformly from this range.
        l1_gap: distance to the box under which an outward l1 coordinate is frozen.
        early_stop: an example stops moving once the model misclassifies it (the reference code).
        l1_k_per_step: draw the l1 ``k`` at every iteration instead of once per batch (the reference code).
        l1_freeze_box: the l1 step also skips coordinates sitting on a box bound (the reference ``l1_dir_topk``).
        per_norm: ``{norm: {"steps": int, "alpha": float, "start": "zero" | "uniform" | "sphere"}}`` overrides.
        msd_alphas: MSD's absolute step per norm (default: ``rel_step * eps / steps``).
    """

    steps: int = 10
    rel_step: float = 2.5
    random_start: bool = True
    l1_k_range: tuple[int, int] = (5, 20)
    l1_gap: float = 0.05
    early_stop: bool = False
    l1_k_per_step: bool = False
    l1_freeze_box: bool = False
    per_norm: dict[str, dict[str, Any]] = field(default_factory=dict)
    msd_alphas: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.l1_k_range = tuple(int(v) for v in self.l1_k_range)
        for norm, over in self.per_norm.items():
            check_norm(norm)
            unknown = sorted(set(over) - {"steps", "alpha", "start"})
            if unknown:
                raise ValueError(f"unknown per-norm attack settings {unknown} for {norm}")
            if over.get("start", "zero") not in START_KINDS:
                raise ValueError(f"attack start must be one of {START_KINDS}, got {over['start']!r}")
            if int(over.get("steps", 1)) < 1:
                raise ValueError(f"attack steps must be >= 1, got {over['steps']} for {norm}")

    def steps_for(self, norm: str) -> int:
        """Iterations of the ``norm`` training attack."""
        return int(self.per_norm.get(norm, {}).get("steps", self.steps))

    def alpha(self, eps: float, norm: str | None = None) -> float:
        """Step per iteration of the ``norm`` attack (absolute when ``per_norm`` gives one, else relative)."""
        over = self.per_norm.get(norm, {}) if norm else {}
        if "alpha" in over:
            return float(over["alpha"])
        return self.rel_step * eps / self.steps_for(norm) if norm else self.rel_step * eps / self.steps

    def start_for(self, norm: str) -> str:
        """``zero``, ``uniform`` (in the ball) or ``sphere`` (on the l2 sphere, the reference l2 start)."""
        over = self.per_norm.get(norm, {})
        if "start" in over:
            return str(over["start"])
        return "uniform" if self.random_start and norm != "l1" else "zero"

    def msd_alpha(self, eps: float, norm: str) -> float:
        return float(self.msd_alphas.get(norm, self.rel_step * eps / self.steps))


def reference_attack(steps: int | None = None) -> AttackSettings:
    """The reference code's training attacks; ``steps`` rescales every attack to that many iterations.

    Rescaling keeps each attack's total travel (iterations x step) as in the reference: l-inf 50 x 0.01 becomes,
    at 10 steps, 10 x 0.05. MSD (100 iterations in the reference) is rescaled the same way.
    """
    per_norm = {}
    for norm, (iters, alpha, start) in REFERENCE_ATTACKS.items():
        n = int(steps) if steps else iters
        per_norm[norm] = {"steps": n, "alpha": alpha * iters / n, "start": start}
    msd_iters, msd_alphas = REFERENCE_MSD
    n_msd = int(steps) if steps else msd_iters
    return AttackSettings(
        steps=n_msd,
        early_stop=True,
        l1_k_per_step=True,
        l1_freeze_box=True,
        per_norm=per_norm,
        msd_alphas={k: v * msd_iters / n_msd for k, v in msd_alphas.items()},
    )


def sphere_start(shape: torch.Size, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """The reference l2 start: ``u * (2u - 1)`` for uniform ``u``, rescaled onto the l2 sphere of radius ``eps``."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(shape, generator=generator, device=device)
    d = u * (2 * u - 1)
    return d * bview(eps / lp_norm(d, "l2").clamp_min(1e-12), d)


@dataclass
class StepContext:
    """What a method needs besides the batch: budgets (already ramped), attack settings and the generator."""

    budgets: dict[str, float]
    attack: AttackSettings
    generator: torch.Generator
    norms: tuple[str, ...] = NORMS
    step: int = 0
    avg_clean: bool = False
    gate_adversary: str = "branch"


@dataclass
class StepLosses:
    """The losses of one step; ``gate`` is None for methods without a gate."""

    classification: torch.Tensor
    gate: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)


def pgd_examples(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, ctx: StepContext
) -> torch.Tensor:
    """Training-time PGD examples under ``norm`` with the model as it is routed; eval mode during the attack."""
    eps = ctx.budgets[norm]
    kind = ctx.attack.start_for(norm)
    start = None
    if kind == "uniform":
        start = random_start(images.shape, norm, eps, ctx.generator).to(images.device)
    elif kind == "sphere":
        start = sphere_start(images.shape, eps, ctx.generator).to(images.device)
    with attack_mode(model):
        return lp_pgd(
            model,
            images,
            labels,
            norm=norm,
            eps=eps,
            steps=ctx.attack.steps_for(norm),
            alpha=ctx.attack.alpha(eps, norm),
            start=start,
            k_range=ctx.attack.l1_k_range,
            gap=ctx.attack.l1_gap,
            k_per_step=ctx.attack.l1_k_per_step,
            freeze_box=ctx.attack.l1_freeze_box,
            early_stop=ctx.attack.early_stop,
            generator=ctx.generator,
        )


class Method:
    """A training objective. Subclasses set ``name`` and implement :meth:`losses`."""

    name: str = "method"
    uses_gate: bool = False

    def norms(self, requested: Sequence[str]) -> tuple[str, ...]:
        """The norms this method trains against, given the user's list (validated)."""
        return tuple(check_norm(n) for n in requested)

    def losses(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ctx: StepContext) -> StepLosses:
        raise NotImplementedError


DEFENSE_METHODS: Registry[Method] = Registry("defense method")


def create_method(name: str) -> Method:
    """The training objective registered under ``name`` (``gbn``, ``avg``, ``max``, ``msd``, ``pgd_linf``, ...)."""
    return DEFENSE_METHODS.create(name)


def list_methods(pattern: str = "*") -> list[str]:
    return DEFENSE_METHODS.list(pattern)


class Standard(Method):
    name = "standard"

    def norms(self, requested):
        super().norms(requested)
        return ()

    def losses(self, model, images, labels, ctx):
        logits = model(images)
        return StepLosses(F.cross_entropy(logits, labels), stats={"acc": _acc(logits, labels)})


class SingleNormPGD(Method):
    """Vanilla PGD adversarial training on one norm."""

    def __init__(self, norm: str) -> None:
        self.norm = check_norm(norm)
        self.name = f"pgd_{norm}"

    def norms(self, requested):
        super().norms(requested)
        return (self.norm,)

    def losses(self, model, images, labels, ctx):
        adv = pgd_examples(model, images, labels, self.norm, ctx)
        logits = model(adv)
        return StepLosses(F.cross_entropy(logits, labels), stats={f"acc_{self.norm}": _acc(logits, labels)})


class Average(Method):
    """AVG (Tramer & Boneh, 2019): mean of the per-norm PGD losses."""

    name = "avg"

    def losses(self, model, images, labels, ctx):
        advs = {n: pgd_examples(model, images, labels, n, ctx) for n in ctx.norms}
        if ctx.avg_clean:
            advs = {"clean": images, **advs}
        losses, stats = [], {}
        for n, adv in advs.items():
            logits = model(adv)
            losses.append(F.cross_entropy(logits, labels))
            stats[f"acc_{n}"] = _acc(logits, labels)
        return StepLosses(torch.stack(losses).mean(), stats=stats)


class Maximum(Method):
    """MAX (Tramer & Boneh, 2019): per example, train on the highest-loss PGD example among the norms."""

    name = "max"

    def losses(self, model, images, labels, ctx):
        advs = [pgd_examples(model, images, labels, n, ctx) for n in ctx.norms]
        with attack_mode(model), torch.no_grad():
            per = torch.stack([F.cross_entropy(model(a), labels, reduction="none") for a in advs])
        pick = per.argmax(dim=0)
        worst = torch.stack(advs)[pick, torch.arange(images.shape[0], device=images.device)]
        logits = model(worst)
        stats = {f"picked_{n}": float((pick == i).float().mean()) for i, n in enumerate(ctx.norms)}
        return StepLosses(F.cross_entropy(logits, labels), stats={"acc_worst": _acc(logits, labels), **stats})


class MultiSteepestDescent(Method):
    """MSD (Maini et al., 2020): train on the Multi Steepest Descent example."""

    name = "msd"

    def losses(self, model, images, labels, ctx):
        budgets = {n: ctx.budgets[n] for n in ctx.norms}
        with attack_mode(model):
            adv = msd_perturb(
                model,
                images,
                labels,
                budgets=budgets,
                steps=ctx.attack.steps,
                alphas={n: ctx.attack.msd_alpha(eps, n) for n, eps in budgets.items()},
                k_range=ctx.attack.l1_k_range,
                gap=ctx.attack.l1_gap,
                generator=ctx.generator,
            )
        logits = model(adv)
        return StepLosses(F.cross_entropy(logits, labels), stats={"acc_msd": _acc(logits, labels)})


class EAT(Method):
    """E-AT (Croce & Hein, 2022): adversarial training that alternates l1 and l-inf from batch to batch."""

    name = "eat"
    cycle: tuple[str, ...] = ("l1", "linf")

    def norms(self, requested):
        requested = super().norms(requested)
        missing = [n for n in self.cycle if n not in requested]
        if missing:
            raise ValueError(f"E-AT alternates l1 and linf; the training norms {requested} lack {missing}")
        return self.cycle

    def norm_at(self, step: int) -> str:
        """The norm trained at optimisation step ``step``."""
        return self.cycle[step % len(self.cycle)]

    def losses(self, model, images, labels, ctx):
        norm = self.norm_at(ctx.step)
        adv = pgd_examples(model, images, labels, norm, ctx)
        logits = model(adv)
        stats = {f"acc_{norm}": _acc(logits, labels), **{f"trained_{n}": float(n == norm) for n in self.cycle}}
        return StepLosses(F.cross_entropy(logits, labels), stats=stats)


class GatedBN(Method):
    """GBN (Liu et al., 2020): per-domain batches through their own branches; the gate learns the domain."""

    name = "gbn"
    uses_gate = True

    def losses(self, model, images, labels, ctx):
        domains = model_domains(model)
        missing = [d for d in domains if d != "clean" and d not in ctx.norms]
        if missing:
            raise ValueError(f"the GBN model has branches {domains} but training norms are {ctx.norms}")
        if ctx.gate_adversary not in GATE_ADVERSARIES:
            raise ValueError(f"unknown gate adversary {ctx.gate_adversary!r}; expected one of {GATE_ADVERSARIES}")
        batches: list[tuple[str, str, torch.Tensor]] = []  # (label, domain, images)
        for d in domains:
            if d == "clean":
                batches.append((d, d, images))
            else:
                # Each adversarial batch attacks its own branch (the reference's is_training=True, norm_type=k).
                with route_domain(model, d):
                    batches.append((d, d, pgd_examples(model, images, labels, d, ctx)))
        if ctx.gate_adversary == "mixture":
            # Examples crafted end to end against the soft-gated mixture, as the test-time adversary crafts them.
            for d in domains:
                if d != "clean":
                    batches.append((f"mix_{d}", d, pgd_examples(model, images, labels, d, ctx)))
        cls_losses, gate_losses, stats = [], [], {}
        for label, d, x in batches:
            k = domains.index(d)
            with route_domain(model, d):
                logits = model(x)
                gates = collect_gate_logits(model)
            cls_losses.append(F.cross_entropy(logits, labels))
            target = torch.full((images.shape[0],), k, dtype=torch.long, device=images.device)
            gate_losses.append(torch.stack([F.cross_entropy(g, target) for g in gates]).sum())
            stats[f"acc_{label}"] = _acc(logits, labels)
            stats[f"gate_acc_{label}"] = float(torch.stack([(g.argmax(1) == k).float().mean() for g in gates]).mean())
        return StepLosses(torch.stack(cls_losses).mean(), torch.stack(gate_losses).mean(), stats)


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


DEFENSE_METHODS.add("standard", Standard, norms=0)
DEFENSE_METHODS.add("pgd_linf", lambda: SingleNormPGD("linf"), norms=1)
DEFENSE_METHODS.add("pgd_l2", lambda: SingleNormPGD("l2"), norms=1)
DEFENSE_METHODS.add("pgd_l1", lambda: SingleNormPGD("l1"), norms=1)
DEFENSE_METHODS.add("avg", Average, norms=3)
DEFENSE_METHODS.add("max", Maximum, norms=3)
DEFENSE_METHODS.add("msd", MultiSteepestDescent, norms=3)
DEFENSE_METHODS.add("eat", EAT, norms=2)
DEFENSE_METHODS.add("gbn", GatedBN, norms=3)


def method_summary() -> list[dict[str, Any]]:
    """One row per method (name, doc line) for the CLI."""
    rows = []
    for name in list_methods():
        obj = create_method(name)
        doc = (type(obj).__doc__ or "").strip().splitlines()
        rows.append({"name": name, "about": doc[0] if doc else ""})
    return rows
