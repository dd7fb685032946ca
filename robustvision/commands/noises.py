"""``robustvision noises``: list every registered noise with its kind, parameters and budgets."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from robustvision.commands import user_errors

app = typer.Typer(no_args_is_help=True, help="List every noise with its kind, parameters and budgets.")

# Arguments that are not settings of the noise itself.
_SKIP = {"self", "model", "source", "args", "kwargs"}
_META_SHOWN = ("kind", "norm", "family", "group")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def _fmt_budget(value: float, norm: str) -> str:
    """l-inf budgets read as k/255 (RobustART's notation) when they are half-integer multiples of 1/255."""
    k = value * 255
    if norm == "linf" and abs(2 * k - round(2 * k)) < 1e-6:
        return f"{k:g}/255"
    return f"{value:.4g}"


def builder_defaults(builder: Any) -> list[str]:
    """``name=default`` for each keyword a registered builder takes (``name`` alone when it is required)."""
    bound: dict[str, Any] = {}
    target = builder
    while isinstance(target, functools.partial):
        bound.update(target.keywords)
        target = target.func
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    out = []
    for name, p in sig.parameters.items():
        if name in _SKIP or name in bound or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append(name if p.default is inspect.Parameter.empty else f"{name}={_fmt(p.default)}")
    return out


def budgets_for(norm: str | None, image_shape: tuple[int, int, int]) -> str:
    """RobustART's budgets for ``norm`` at 224 px and scaled to ``image_shape`` ('' for other noises)."""
    from robustvision.noises.adversarial import ROBUSTART_BUDGETS, robustart_budgets

    if norm not in ROBUSTART_BUDGETS:
        return ""
    ref = ", ".join(_fmt_budget(e, norm) for e in ROBUSTART_BUDGETS[norm])
    if image_shape == (3, 224, 224):
        return ref
    scaled = ", ".join(_fmt_budget(e, norm) for e in robustart_budgets(norm, image_shape))
    return f"{ref} @224 -> {scaled}"


@app.command("list")
def list_command(
    pattern: str = typer.Argument("*", help="Glob over noise names, e.g. 'pgd*'."),
    kind: str = typer.Option(None, "--kind", help="adversarial, natural, system or physical."),
    image_size: int = typer.Option(32, "--image-size", help="Image side the budgets are scaled to."),
    channels: int = typer.Option(3, "--channels", help="Image channels the budgets are scaled to."),
) -> None:
    """Print every registered noise matching PATTERN: kind, family, norm, parameters and budgets."""
    with user_errors():
        from robustvision.noises import NOISES, NoiseKind, list_noises

        if image_size < 1 or channels < 1:
            raise ValueError("--image-size and --channels must be positive")
        if kind is not None:
            kinds = [k.value for k in NoiseKind]
            if kind not in kinds:
                raise ValueError(f"unknown kind {kind!r}; expected one of {kinds}")
        names = list_noises(pattern, kind)
        if not names:
            raise ValueError(f"no noise matches {pattern!r}" + (f" of kind {kind!r}" if kind else ""))
        shape = (channels, image_size, image_size)
        table = Table(title=f"{len(names)} noises (budgets: RobustART, scaled to {channels}x{image_size}x{image_size})")
        for col in ("name", "kind", "family", "norm", "parameters (defaults)", "budgets"):
            table.add_column(col, overflow="fold")
        for name in names:
            meta = NOISES.meta(name)
            kind_value = meta.get("kind")
            kind_text = getattr(kind_value, "value", kind_value) or ""
            family = meta.get("family") or meta.get("group") or ""
            norm = meta.get("norm")
            params = ", ".join(builder_defaults(NOISES.get(name)))
            table.add_row(name, str(kind_text), str(family), str(norm or ""), params, budgets_for(norm, shape))
        Console(width=200).print(table)
