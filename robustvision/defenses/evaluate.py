"""Multi-perturbation robustness evaluation: per-norm and union accuracy, adaptive attacks on GBN, gate accuracy.

Protocol (MSD's, Maini et al. 2020, which GBN follows; GBN's released `multi_att_gbn.py` uses the same union rule):

- **Per-norm robust accuracy**: a sample counts for norm ``p`` only if it is classified correctly clean *and*
  under every attack of norm ``p``. Attacks are named by their noise-registry name (``pgd_linf``, ``apgd_l2``,
  ``autoattack_linf``, ``pgd_l1_topk``, ...), so stronger attacks plug in without code changes; an attack marked
  optional that is not registered in this installation is skipped and listed in the report.
- **Union accuracy**: a sample counts only if it survives every attack of every norm.
- **Adaptive attacks on GBN** (so the defense is not credited for gradient masking through the gate):
  ``end-to-end``: every attack runs on the whole gated mixture in eval mode, gradients flowing through the gate;
  ``branch``: every attack also runs against each branch assignment (the model hard-routed through branch ``k``),
  and the example is then judged by the full gated model; ``gate``: PGD on the gated mixture's loss plus the log
  weight every gate gives one branch, for each branch (the example must fool the classifier *and* drive the gates
  to, e.g., the clean branch). A sample is robust only if it survives all of them. The report gives the end-to-end
  numbers and the adaptive (worst-case) numbers.
- **Gate accuracy**: how often each GBN layer's gate puts most weight on the right domain, on clean test images and
  on the end-to-end adversarial examples of the first attack of each norm.
- **Routing diagnosis** (GBN): for each norm and each gated layer, the share of those end-to-end examples the gate
  sends to each branch (argmax; each row sums to 1); the accuracy of every branch alone (the model hard-routed
  through it) and of the mixture on the same examples; and the **perfect-routing** accuracy: each norm attacked
  and judged on its own branch alone, as if the gate always picked the right branch (per norm and union; the
  attacks of ``routing_attacks``). When the mixture is far below perfect routing, the end-to-end adversary wins by
  steering the gates; when perfect routing itself is low, the branches are the limit.

Attacks only try samples still robust for their norm (a sample already broken cannot become robust again), so
the numbers are exact worst cases over the attack list at a fraction of the cost.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from robustvision.defenses.attacks import NORMS, GateSteeringPGD, check_norm
from robustvision.defenses.gbn import gbn_layers, route_domain
from robustvision.noises.adversarial import lp_norm
from robustvision.noises.base import NOISES
from robustvision.runtime import make_generator


@dataclass(frozen=True)
class AttackSpec:
    """One attack of an evaluation: its norm, registry name and settings (eps comes from the budgets).

    Attributes:
        optional: skip (and report) it when this installation has no such attack, instead of failing.
    """

    norm: str
    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    optional: bool = False

    def label(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.name}({args})" if args else self.name


ADAPTIVE_MODES: tuple[str, ...] = ("branch", "gate")


def _spec(norm: str, name: str, optional: bool = False, **kwargs: Any) -> AttackSpec:
    return AttackSpec(norm, name, kwargs, optional)


# Attack lists per preset. "standard" is the CLI default; "strong" follows MSD's protocol (10 restarts) plus
# AutoAttack/APGD where installed; "quick" is for smoke runs only.
ATTACK_PRESETS: dict[str, tuple[AttackSpec, ...]] = {
    "quick": (
        _spec("linf", "pgd_linf", steps=20),
        _spec("l2", "pgd_l2", steps=20),
        _spec("l1", "pgd_l1_topk", steps=20),
    ),
    "standard": (
        _spec("linf", "pgd_linf", steps=50, restarts=1),
        _spec("linf", "apgd_ce", optional=True, steps=50),
        _spec("linf", "mim_linf", steps=20),
        _spec("l2", "pgd_l2", steps=50, restarts=1),
        _spec("l2", "apgd_l2", optional=True, steps=50),
        _spec("l1", "pgd_l1_topk", steps=50, restarts=1),
        _spec("l1", "apgd_l1", optional=True, steps=50),
    ),
    "strong": (
        _spec("linf", "pgd_linf", steps=100, restarts=9),
        _spec("linf", "autoattack_linf", optional=True),
        _spec("linf", "mim_linf", steps=40),
        _spec("l2", "pgd_l2", steps=100, restarts=9),
        _spec("l2", "autoattack_l2", optional=True),
        _spec("l2", "cw_l2", optional=True),
        _spec("l1", "pgd_l1_topk", steps=100, restarts=9),
        _spec("l1", "apgd_l1", optional=True),
        _spec("l1", "pgd_l1", steps=100, restarts=4),
    ),
}


def parse_attack(text: str) -> AttackSpec:
    """Parse ``NORM=NAME[:key=value,...]``, e.g. ``linf=pgd_linf:steps=100,restarts=4`` (values as numbers)."""
    norm, sep, rest = text.partition("=")
    if not sep or not rest:
        raise ValueError(f"attack {text!r} must look like NORM=NAME[:key=value,...], e.g. l2=pgd_l2:steps=50")
    name, _, args = rest.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, args.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"attack option {item!r} in {text!r} must be key=value")
        kwargs[key.strip()] = _number(value.strip())
    return AttackSpec(check_norm(norm.strip()), name.strip(), kwargs)


def _number(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def attack_list(preset: str = "standard", extra: Sequence[AttackSpec] = (), norms: Sequence[str] = NORMS):
    """The attacks of ``preset`` (plus ``extra``) for the chosen norms."""
    if preset not in ATTACK_PRESETS and preset != "none":
        raise ValueError(f"unknown attack preset {preset!r}; expected one of {[*ATTACK_PRESETS, 'none']}")
    base = ATTACK_PRESETS.get(preset, ())
    norms = tuple(check_norm(n) for n in norms)
    return [s for s in (*base, *extra) if s.norm in norms]


@dataclass
class RobustnessReport:
    """What :func:`evaluate_robustness` measured (accuracies as fractions of the ``n`` evaluated samples).

    Attributes:
        per_norm / union: the final numbers (adaptive worst case for GBN models).
        per_attack: cumulative accuracy within each norm after each attack, in order (e2e then branch).
        e2e_per_norm / e2e_union: GBN only: the end-to-end attacks alone.
        branch_broken: GBN only: per norm, samples the branch-assignment attacks broke that survived end to end.
        gate_broken: GBN only: per norm, samples the gate-steering attacks broke that survived everything before.
        gate_accuracy: GBN only: ``{layer: {domain: accuracy}}``.
        routing: GBN only: ``{norm: {layer: {branch: share}}}`` of the end-to-end examples (``clean``: clean images).
        branch_alone: GBN only: ``{norm: {branch or "mixture": accuracy}}`` on the end-to-end examples of the
            norm's first attack (clean-correct samples only).
        perfect_routing_per_norm / perfect_routing_union: GBN only: each norm attacked and judged on its own
            branch (fractions of ``n``).
        skipped: optional attacks absent from this installation.
    """

    n: int
    budgets: dict[str, float]
    clean: float
    per_norm: dict[str, float]
    union: float
    per_attack: list[dict[str, Any]]
    is_gbn: bool = False
    e2e_per_norm: dict[str, float] | None = None
    e2e_union: float | None = None
    branch_broken: dict[str, int] | None = None
    gate_broken: dict[str, int] | None = None
    gate_accuracy: dict[str, dict[str, float]] | None = None
    routing: dict[str, dict[str, dict[str, float]]] | None = None
    branch_alone: dict[str, dict[str, float]] | None = None
    perfect_routing_per_norm: dict[str, float] | None = None
    perfect_routing_union: float | None = None
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BallViolation(RuntimeError):
    """An attack returned a point outside its ball or the [0, 1] box (a bug in the attack, never credited)."""


def _check_inside(adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float, name: str) -> None:
    size = lp_norm(adv - x, norm).max().item() if len(x) else 0.0
    if size > eps * (1 + 1e-4) + 1e-5 or adv.min() < -1e-6 or adv.max() > 1 + 1e-6:
        raise BallViolation(f"attack {name!r} left its {norm} ball of radius {eps} (max norm {size:.6g}) or [0, 1]")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Eval-mode predictions in batches (GBN: the gated mixture)."""
    outs = [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0, dtype=torch.long, device=images.device)


def _resolve(specs: Sequence[AttackSpec]) -> tuple[list[AttackSpec], list[str]]:
    usable, skipped = [], []
    for s in specs:
        check_norm(s.norm)
        if s.name not in NOISES:
            if s.optional:
                skipped.append(f"{s.norm}:{s.name}")
                continue
            NOISES.get(s.name)  # raises with close names
        meta_norm = NOISES.meta(s.name).get("norm")
        if meta_norm in NORMS and meta_norm != s.norm:
            raise ValueError(f"attack {s.name!r} is an {meta_norm} attack, but it was listed under {s.norm}")
        usable.append(s)
    return usable, skipped


def evaluate_robustness(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    budgets: Mapping[str, float],
    attacks: Sequence[AttackSpec],
    *,
    adaptive: bool = True,
    adaptive_modes: Sequence[str] = ADAPTIVE_MODES,
    branch_attacks: str = "first",
    diagnose: bool = True,
    routing_attacks: str = "first",
    gate_weight: float = 1.0,
    batch_size: int = 250,
    seed: int = 0,
    callback: Callable[[str], None] | None = None,
) -> RobustnessReport:
    """Robust accuracy of ``model`` per norm and over the union of norms.

    Args:
        model: an eval-mode classifier on [0, 1] images (GBN models get the adaptive attacks too).
        images, labels: the evaluation set (``N x C x H x W`` in [0, 1], int64), on the model's device.
        budgets: eps per norm; every norm with an attack needs one.
        attacks: the attack list (see :func:`attack_list`); each norm in it is evaluated.
        adaptive: GBN only: also run the adaptive attacks of ``adaptive_modes`` (see module docs).
        adaptive_modes: ``branch`` (attack each hard-routed branch) and/or ``gate`` (steer every gate to each
            branch while maximising the loss of the gated mixture; steps and restarts of the norm's first attack).
        branch_attacks: ``first`` (the first attack of each norm against each branch) or ``all``.
        diagnose: GBN only: the routing diagnosis (routing shares, branch-alone accuracy, perfect routing).
        routing_attacks: GBN only: the attacks of the perfect-routing evaluation, ``first`` of each norm or ``all``.
        gate_weight: weight of the gate term of the gate-steering attack.
        batch_size: attack batch size.
        seed: seeds every attack's randomness per (attack, norm, branch, batch).
        callback: receives a short text before each attack (progress).

    Returns:
        A :class:`RobustnessReport`.

    Raises:
        ValueError: unknown attacks or norms, a norm without budget, an attack listed under the wrong norm.
        BallViolation: an attack returned a point outside its ball or the box.
    """
    for name, value in (("branch_attacks", branch_attacks), ("routing_attacks", routing_attacks)):
        if value not in ("first", "all"):
            raise ValueError(f"{name} must be 'first' or 'all', got {value!r}")
    unknown_modes = [m for m in adaptive_modes if m not in ADAPTIVE_MODES]
    if unknown_modes:
        raise ValueError(f"unknown adaptive attack modes {unknown_modes}; expected a subset of {ADAPTIVE_MODES}")
    start = time.time()
    usable, skipped = _resolve(attacks)
    norms = list(dict.fromkeys(s.norm for s in usable))
    if not norms:
        raise ValueError("no usable attack to evaluate with")
    for n in norms:
        if n not in budgets:
            raise ValueError(f"no {n} budget given (budgets: {dict(budgets)})")
    model.eval()
    layers = gbn_layers(model)
    is_gbn = bool(layers)
    domains = layers[0][1].domains if is_gbn else ()
    clean_ok = predict(model, images) == labels
    robust = {p: clean_ok.clone() for p in norms}
    per_attack: list[dict[str, Any]] = []
    first_spec = {p: next(s for s in usable if s.norm == p) for p in norms}
    first_adv: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {p: [] for p in norms}  # diagnosis on these

    def run(spec: AttackSpec, route: str | None, steer: str | None = None) -> int:
        eps = float(budgets[spec.norm])
        idx = robust[spec.norm].nonzero().squeeze(1)
        if steer is not None:
            label = f"gate_steer_{spec.norm}(steps={spec.kwargs.get('steps', 50)},to={steer})"
            attack = GateSteeringPGD(
                model,
                norm=spec.norm,
                eps=eps,
                domain=steer,
                steps=int(spec.kwargs.get("steps", 50)),
                restarts=int(spec.kwargs.get("restarts", 0)),
                weight=gate_weight,
            )
        else:
            label = spec.label()
            attack = NOISES.create(spec.name, model=model, eps=eps, **dict(spec.kwargs))
        if callback is not None:
            callback(f"{spec.norm} {label}" + (f" on branch {route}" if route else "") + f" ({len(idx)})")
        broken = 0
        for b in range(0, len(idx), batch_size):
            sel = idx[b : b + batch_size]
            x, y = images[sel], labels[sel]
            g = make_generator(seed, "gbn-eval", spec.norm, label, route, b)
            with route_domain(model, route) if route is not None else contextlib.nullcontext():
                adv = attack(x, y, generator=g)
            _check_inside(adv, x, spec.norm, eps, label)
            wrong = predict(model, adv) != y  # always judged by the full (gated) model
            robust[spec.norm][sel[wrong]] = False
            broken += int(wrong.sum())
            if is_gbn and route is None and steer is None and spec is first_spec[spec.norm]:
                first_adv[spec.norm].append((adv, y))
        per_attack.append(
            {
                "norm": spec.norm,
                "attack": label,
                "branch": route or steer,
                "mode": "branch" if route else "gate" if steer else "end-to-end",
                "broken": broken,
                "accuracy_after": _frac(robust[spec.norm]),
            }
        )
        return broken

    for spec in usable:
        run(spec, None)
    e2e = {p: robust[p].clone() for p in norms}
    branch_broken = gate_broken = None
    if is_gbn and adaptive and "branch" in adaptive_modes:
        branch_broken = {p: 0 for p in norms}
        for p in norms:
            specs = [s for s in usable if s.norm == p]
            for spec in specs[:1] if branch_attacks == "first" else specs:
                for d in domains:
                    branch_broken[p] += run(spec, d)
    if is_gbn and adaptive and "gate" in adaptive_modes:
        gate_broken = {p: 0 for p in norms}
        for p in norms:
            for d in domains:
                gate_broken[p] += run(first_spec[p], None, steer=d)
    union = torch.stack([robust[p] for p in norms]).all(dim=0)
    report = RobustnessReport(
        n=len(labels),
        budgets={p: float(budgets[p]) for p in norms},
        clean=_frac(clean_ok),
        per_norm={p: _frac(robust[p]) for p in norms},
        union=_frac(union),
        per_attack=per_attack,
        is_gbn=is_gbn,
        skipped=skipped,
    )
    if is_gbn:
        report.e2e_per_norm = {p: _frac(e2e[p]) for p in norms}
        report.e2e_union = _frac(torch.stack([e2e[p] for p in norms]).all(dim=0))
        report.branch_broken = branch_broken
        report.gate_broken = gate_broken
        adv_sets = {p: (torch.cat([a for a, _ in v]), torch.cat([y for _, y in v])) for p, v in first_adv.items() if v}
        report.gate_accuracy = gate_accuracy(model, {"clean": images, **{p: a for p, (a, _) in adv_sets.items()}})
        if diagnose:
            report.routing = routing_shares(
                model, {"clean": images[clean_ok], **{p: a for p, (a, _) in adv_sets.items()}}
            )
            report.branch_alone = {p: branch_accuracy(model, a, y) for p, (a, y) in adv_sets.items()}
            specs = {p: [s for s in usable if s.norm == p] for p in norms}
            if routing_attacks == "first":
                specs = {p: v[:1] for p, v in specs.items()}
            pr = perfect_routing(model, images, labels, budgets, specs, batch_size=batch_size, seed=seed)
            report.perfect_routing_per_norm = {p: _frac(m) for p, m in pr.items()}
            report.perfect_routing_union = _frac(torch.stack(list(pr.values())).all(dim=0)) if pr else None
    report.seconds = time.time() - start
    return report


@torch.no_grad()
def routing_shares(model: nn.Module, sets: Mapping[str, torch.Tensor]) -> dict[str, dict[str, dict[str, float]]]:
    """``{set: {layer: {branch: share}}}``: the share of ``sets[set]`` whose gate argmax is each branch, per layer.

    Each ``{branch: share}`` row sums to 1 (a tied layer reports the decision it reuses). Empty sets are left out.
    """
    layers = gbn_layers(model)
    domains = layers[0][1].domains
    was = model.training
    model.eval()
    out: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for name, x in sets.items():
            if not len(x):
                continue
            counts = {ln: torch.zeros(len(domains)) for ln, _ in layers}
            for i in range(0, len(x), 500):
                model(x[i : i + 500])
                for ln, layer in layers:
                    pick = layer.current_gate_logits().argmax(1).cpu()
                    counts[ln] += torch.bincount(pick, minlength=len(domains)).float()
            out[name] = {ln: {d: float(c[k] / len(x)) for k, d in enumerate(domains)} for ln, c in counts.items()}
    finally:
        model.train(was)
    return out


@torch.no_grad()
def branch_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy on ``images`` of every GBN branch alone (the model hard-routed through it) and of the mixture."""
    domains = gbn_layers(model)[0][1].domains
    out = {}
    for d in domains:
        with route_domain(model, d):
            out[d] = _frac(predict(model, images) == labels)
    out["mixture"] = _frac(predict(model, images) == labels)
    return out


def perfect_routing(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    budgets: Mapping[str, float],
    specs: Mapping[str, Sequence[AttackSpec]],
    *,
    batch_size: int = 250,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Per norm, the samples robust when the gate is perfect: attacked and judged on the norm's own branch alone.

    A sample counts for norm ``p`` when branch ``p`` classifies it correctly clean and after every attack of
    ``specs[p]`` run against branch ``p``. Norms without a branch of their own are left out.

    Returns:
        ``{norm: bool mask of shape N}``.
    """
    domains = gbn_layers(model)[0][1].domains
    out: dict[str, torch.Tensor] = {}
    model.eval()
    for p, plist in specs.items():
        if p not in domains:
            continue
        with route_domain(model, p):
            ok = predict(model, images) == labels
            for spec in plist:
                eps = float(budgets[p])
                attack = NOISES.create(spec.name, model=model, eps=eps, **dict(spec.kwargs))
                idx = ok.nonzero().squeeze(1)
                for b in range(0, len(idx), batch_size):
                    sel = idx[b : b + batch_size]
                    x, y = images[sel], labels[sel]
                    adv = attack(x, y, generator=make_generator(seed, "gbn-perfect-routing", p, spec.label(), b))
                    _check_inside(adv, x, p, eps, spec.label())
                    ok[sel[predict(model, adv) != y]] = False
        out[p] = ok
    return out


def gate_accuracy(model: nn.Module, sets: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per GBN layer and domain, the fraction of ``sets[domain]`` whose gate argmax is that domain's branch.

    Domains the model has no branch for are left out.
    """
    layers = gbn_layers(model)
    domains = layers[0][1].domains
    out: dict[str, dict[str, float]] = {name: {} for name, _ in layers}
    with torch.no_grad():
        for d, x in sets.items():
            if d not in domains or not len(x):
                continue
            hits = {name: 0 for name, _ in layers}
            for i in range(0, len(x), 500):
                model(x[i : i + 500])
                for name, layer in layers:
                    hits[name] += int((layer.current_gate_logits().argmax(1) == domains.index(d)).sum())
            for name in hits:
                out[name][d] = hits[name] / len(x)
    return out


def format_routing(report: RobustnessReport) -> list[str]:
    """The routing table (share of end-to-end examples per branch, per norm and layer) and branch-alone accuracy."""
    if not report.routing:
        return []
    branches = list(next(iter(next(iter(report.routing.values())).values())))
    lines = ["routing of end-to-end examples (share sent to each branch, gate argmax):"]
    lines.append(f"  {'examples':<9}{'layer':<10}" + "".join(f"{b:>8}" for b in branches))
    for name, per_layer in report.routing.items():
        for layer, shares in per_layer.items():
            lines.append(f"  {name:<9}{layer:<10}" + "".join(f"{100 * shares[b]:>7.1f}%" for b in branches))
    if report.branch_alone:
        cols = [*branches, "mixture"]
        lines.append("accuracy on the end-to-end examples of each norm, by branch alone and by the mixture:")
        lines.append(f"  {'examples':<9}" + "".join(f"{c:>9}" for c in cols))
        for p, accs in report.branch_alone.items():
            lines.append(f"  {p:<9}" + "".join(f"{100 * accs[c]:>8.1f}%" for c in cols))
    return lines


def _frac(mask: torch.Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else 0.0


def format_report(report: RobustnessReport) -> str:
    """A plain-text summary (percentages)."""
    lines = [f"n={report.n}  clean {100 * report.clean:.1f}%"]
    for p, acc in report.per_norm.items():
        e2e = f"  (end-to-end only {100 * report.e2e_per_norm[p]:.1f}%)" if report.e2e_per_norm else ""
        lines.append(f"{p:>5} eps={report.budgets[p]:g}: {100 * acc:.1f}%{e2e}")
    e2e_u = f"  (end-to-end only {100 * report.e2e_union:.1f}%)" if report.e2e_union is not None else ""
    lines.append(f"union: {100 * report.union:.1f}%{e2e_u}")
    for mode, counts in (("branch-assignment", report.branch_broken), ("gate-steering", report.gate_broken)):
        if counts is not None:
            lines.append(f"broken only by {mode} attacks: " + ", ".join(f"{p} {c}" for p, c in counts.items()))
    if report.gate_accuracy:
        for layer, accs in report.gate_accuracy.items():
            lines.append(f"gate {layer}: " + ", ".join(f"{d} {100 * a:.1f}%" for d, a in accs.items()))
    if report.perfect_routing_per_norm is not None:
        per = ", ".join(f"{p} {100 * a:.1f}%" for p, a in report.perfect_routing_per_norm.items())
        union = report.perfect_routing_union
        lines.append(f"perfect routing (each norm on its own branch): {per}; union {100 * (union or 0):.1f}%")
    lines.extend(format_routing(report))
    if report.skipped:
        lines.append("skipped (not installed): " + ", ".join(report.skipped))
    return "\n".join(lines)
