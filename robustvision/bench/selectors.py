"""Noise selectors: expand ``--noises`` entries (names, globs, kinds, ``name@values``, ``imagenet_p[:name]``)
over the noise registry into :class:`NoiseSpec` objects, and parse budgets and severities."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction

CLEAN = "clean"
IMAGENET_P = "imagenet_p"


class CellKind(str, Enum):
    """The ``kind`` of a bench cell, as stored (compare stored strings with these; store ``.value``)."""

    CLEAN = "clean"
    ADVERSARIAL = "adversarial"
    NATURAL = "natural"
    SYSTEM = "system"
    CHECK = "check"

    def __str__(self) -> str:
        return self.value


KINDS: tuple[str, ...] = (CellKind.ADVERSARIAL.value, CellKind.NATURAL.value, CellKind.SYSTEM.value)


def check_natural_severity(severity: object) -> int:
    """A natural-noise severity: an integer from 1 to 5 (ImageNet-C's scale)."""
    try:
        value = float(severity)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"severity must be an integer from 1 to 5, got {severity!r}") from None
    if value != int(value) or not 1 <= value <= 5:
        raise ValueError(f"severity must be an integer from 1 to 5, got {severity}")
    return int(value)


def parse_number(text: str) -> float:
    """A budget or severity: a number or a fraction such as ``8/255``."""
    try:
        return float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"not a number or fraction: {text!r}") from None


@dataclass(frozen=True)
class NoiseSpec:
    """A noise and the severities (or budgets) to run it at; ``None`` means "the preset's"."""

    name: str
    values: tuple[float, ...] | None = None
    explicit: bool = True  # named directly (errors are errors) rather than matched by a kind or a glob


def split_selectors(items: list[str] | str) -> list[str]:
    """Split comma-separated selectors, keeping ``name@v1,v2`` together (a bare number continues the last one)."""
    out: list[str] = []
    for item in [items] if isinstance(items, str) else items:
        for tok in (t.strip() for t in item.split(",")):
            if not tok:
                continue
            if out and "@" in out[-1] and _is_number(tok):
                out[-1] += "," + tok
            else:
                out.append(tok)
    return out


def _is_number(text: str) -> bool:
    try:
        parse_number(text)
    except ValueError:
        return False
    return True


def parse_selector(text: str) -> tuple[str, tuple[float, ...] | None]:
    name, _, rest = text.strip().partition("@")
    if not name:
        raise ValueError(f"empty noise selector in {text!r}")
    values = tuple(parse_number(v) for v in rest.split(",") if v.strip()) if rest else None
    if rest and not values:
        raise ValueError(f"noise selector {text!r} gives no values after '@'")
    return name, values


def _noises_registry():
    from robustvision.noises import NOISES

    return NOISES


def imagenet_p_name(name: str) -> str | None:
    """The perturbation of an ``imagenet_p:<perturbation>`` noise name (``""`` for bare ``imagenet_p``), else
    ``None``: the one place that reads the ImageNet-P naming."""
    family, _, member = name.partition(":")
    return member if family == IMAGENET_P else None


def noise_scoring(name: str):
    """How the benchmark scores a noise (:class:`~robustvision.noises.base.Scoring`), from registry metadata:
    ``scoring`` of the ImageNet-P sequence or of the registered noise; ``accuracy`` for clean, checks and names this
    install does not know (stored cells of an older run)."""
    from robustvision.noises.base import Scoring

    member = imagenet_p_name(name)
    if member is not None:
        from robustvision.noises.perturbations import PERTURBATIONS

        spec = PERTURBATIONS.get(member)
        return Scoring(spec.scoring) if spec is not None else Scoring.FLIP_PROBABILITY
    reg = _noises_registry()
    if name in reg:
        return Scoring(reg.meta(name).get("scoring", Scoring.ACCURACY))
    return Scoring.ACCURACY


def scored_by_flip(name: str) -> bool:
    """The noise is an image sequence scored by flip probability (ImageNet-P), not by accuracy."""
    from robustvision.noises.base import Scoring

    return noise_scoring(str(name)) == Scoring.FLIP_PROBABILITY


def flip_scored_rows(noises):
    """A boolean mask over a column of noise names (pandas ``Series``): rows scored by flip probability."""
    return noises.map(scored_by_flip).astype(bool)


def noise_kind(name: str) -> str:
    """The kind (adversarial, natural, system, physical) of a noise; ImageNet-P sequences are natural."""
    if imagenet_p_name(name) is not None:
        return CellKind.NATURAL.value
    meta = _noises_registry().meta(name)
    kind = meta.get("kind")
    return getattr(kind, "value", kind) or CellKind.NATURAL.value


def noise_norm(name: str) -> str:
    """The threat-model norm of an adversarial noise (registry metadata, else the name's suffix)."""
    from robustvision.noises.adversarial import NORMS  # the package's one norm vocabulary

    meta = _noises_registry().meta(name)
    norm = meta.get("norm")
    if norm in NORMS:
        return norm
    for n in NORMS:
        if name.endswith(n):
            return n
    return "linf"


def list_imagenet_p() -> list[str]:
    """ImageNet-P perturbation names, or an empty list when the sequences module is not installed."""
    try:
        from robustvision.noises.perturbations import list_perturbations
    except ImportError:
        return []
    return list_perturbations()


def expand_noises(selectors: list[str], *, strict: bool) -> tuple[list[NoiseSpec], list[str]]:
    """Expand selectors over the registry.

    Args:
        selectors: names, globs, kinds, ``name@values`` and ``imagenet_p[:name]`` entries.
        strict: unknown names are an error (user input); otherwise they are reported as skipped (presets name
            noises that a slimmer install may not register).

    Returns:
        ``(specs in order without duplicates, skipped messages)``.
    """
    reg = _noises_registry()
    names = reg.list("*")
    specs: dict[str, NoiseSpec] = {}
    skipped: list[str] = []
    for sel in selectors:
        name, values = parse_selector(sel)
        if name == CLEAN:
            continue
        member = imagenet_p_name(name)
        if member is not None:
            available = list_imagenet_p()
            wanted = available if name == IMAGENET_P else [member]
            if not available:
                msg = "ImageNet-P sequences are not available (robustvision.noises.perturbations is missing)"
                if strict:
                    raise ValueError(msg)
                skipped.append(msg)
                continue
            for p in wanted:
                if p not in available:
                    raise ValueError(f"unknown ImageNet-P perturbation {p!r}; known: {', '.join(available)}")
                specs.setdefault(f"{IMAGENET_P}:{p}", NoiseSpec(f"{IMAGENET_P}:{p}", None))
            continue
        if name in KINDS:
            matched = [n for n in names if noise_kind(n) == name]
        elif any(ch in name for ch in "*?["):
            matched = fnmatch.filter(names, name)
        elif name in names:
            matched = [name]
        else:
            if strict:
                reg.get(name)  # raises UnknownNameError with close names
            skipped.append(f"noise {name!r} is not registered in this install")
            continue
        if not matched:
            msg = f"noise selector {name!r} matches no registered noise"
            if strict:
                raise ValueError(msg)
            skipped.append(msg)
        explicit = matched == [name]
        for n in matched:
            if n in specs and values is None:
                continue
            specs[n] = NoiseSpec(n, values, explicit)
    return list(specs.values()), skipped
