"""Multi-perturbation training objectives behind one registry: GBN, AVG, MAX, MSD, per-norm PGD-AT, standard.

Every method turns a clean batch into ``(classification loss, gate loss or None)`` for one optimisation step:

- ``standard``: cross-entropy on clean images.
- ``pgd_linf`` / ``pgd_l2`` / ``pgd_l1``: vanilla adversarial training on one norm (Madry et al., 2018).
- ``avg``: the mean of the three per-norm PGD losses (Tramer & Boneh, 2019; "PGD Aug" in the MSD tables).
- ``max``: per example, the highest-loss of the three PGD examples (Tramer & Boneh, 2019; "Worst-PGD").
- ``msd``: Multi Steepest Descent examples (Maini et al., 2020).
- ``gbn``: Gated Batch Normalization (Liu et al., 2020): one adversarial batch per norm, each attacking *its own*
  branch; the mean of the per-domain cross-entropies (clean included when the model has a clean branch), plus the
  gates' domain cross-entropy summed over GBN layers and averaged over domains, stepped by a gate-only optimiser.

Attacks are built with the model in eval mode and parameter gradients off (their BN statistics are not
touched); losses are computed in train mode.
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
from robustvision.noises.adversarial import attack_mode, random_start
from robustvision.registry import Registry

# Perturbation budgets in [0, 1] pixel units (GBN and MSD papers; notes/gbn.md section 5).
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


@dataclass
class AttackSettings:
    """How training attacks are built (the same for every method, so budgets of attack steps match).

    Attributes:
        steps: iterations of every training attack (and of MSD).
        rel_step: per-iteration step as a multiple of ``eps / steps`` (2.5: Madry et al.).
        random_start: l-inf and l2 PGD start at a uniform point of the ball (l1 starts at the image, as the
            reference code does).
        l1_k_range: coordinates moved per l1 step, drawn uniformly from this range per batch.
        l1_gap: distance to the box under which an outward l1 coordinate is frozen.
    """

    steps: int = 10
    rel_step: float = 2.5
    random_start: bool = True
    l1_k_range: tuple[int, int] = (5, 20)
    l1_gap: float = 0.05

    def alpha(self, eps: float) -> float:
        return self.rel_step * eps / self.steps


@dataclass
class StepContext:
    """What a method needs besides the batch: budgets (already ramped), attack settings and the generator."""

    budgets: dict[str, float]
    attack: AttackSettings
    generator: torch.Generator
    norms: tuple[str, ...] = NORMS


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
    start = None
    if ctx.attack.random_start and norm != "l1":
        start = random_start(images.shape, norm, eps, ctx.generator).to(images.device)
    with attack_mode(model):
        return lp_pgd(
            model,
            images,
            labels,
            norm=norm,
            eps=eps,
            steps=ctx.attack.steps,
            alpha=ctx.attack.alpha(eps),
            start=start,
            k_range=ctx.attack.l1_k_range,
            gap=ctx.attack.l1_gap,
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
                alphas={n: ctx.attack.alpha(eps) for n, eps in budgets.items()},
                k_range=ctx.attack.l1_k_range,
                gap=ctx.attack.l1_gap,
                generator=ctx.generator,
            )
        logits = model(adv)
        return StepLosses(F.cross_entropy(logits, labels), stats={"acc_msd": _acc(logits, labels)})


class GatedBN(Method):
    """GBN (Liu et al., 2020): per-domain batches through their own branches; the gate learns the domain."""

    name = "gbn"
    uses_gate = True

    def losses(self, model, images, labels, ctx):
        domains = model_domains(model)
        missing = [d for d in domains if d != "clean" and d not in ctx.norms]
        if missing:
            raise ValueError(f"the GBN model has branches {domains} but training norms are {ctx.norms}")
        batches = {}
        for d in domains:
            if d == "clean":
                batches[d] = images
            else:
                # Each adversarial batch attacks its own branch (the reference's is_training=True, norm_type=k).
                with route_domain(model, d):
                    batches[d] = pgd_examples(model, images, labels, d, ctx)
        cls_losses, gate_losses, stats = [], [], {}
        for k, d in enumerate(domains):
            with route_domain(model, d):
                logits = model(batches[d])
                gates = collect_gate_logits(model)
            cls_losses.append(F.cross_entropy(logits, labels))
            target = torch.full((images.shape[0],), k, dtype=torch.long, device=images.device)
            gate_losses.append(torch.stack([F.cross_entropy(g, target) for g in gates]).sum())
            stats[f"acc_{d}"] = _acc(logits, labels)
            stats[f"gate_acc_{d}"] = float(torch.stack([(g.argmax(1) == k).float().mean() for g in gates]).mean())
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
DEFENSE_METHODS.add("gbn", GatedBN, norms=3)


def method_summary() -> list[dict[str, Any]]:
    """One row per method (name, doc line) for the CLI."""
    rows = []
    for name in list_methods():
        obj = create_method(name)
        doc = (type(obj).__doc__ or "").strip().splitlines()
        rows.append({"name": name, "about": doc[0] if doc else ""})
    return rows
