"""Learning-rate schedules shared by every training loop of the package: linear warm-up, then cosine or constant.

Each is a pure function of the step, so a resumed run recomputes the same rate; :func:`lambda_lr` turns one into a
``torch.optim.lr_scheduler.LambdaLR`` for loops that keep a scheduler.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Schedule = Literal["cosine", "constant"]


def warmup_cosine(
    step: int,
    total: int,
    warmup: int = 0,
    *,
    warmup_start: float = 0.0,
    min_factor: float = 0.0,
    schedule: Schedule = "cosine",
) -> float:
    """The learning-rate multiplier at ``step`` (0-based) of ``total``.

    Args:
        step: the current optimisation step.
        total: the number of steps of the run.
        warmup: linear warm-up steps, from ``warmup_start`` to 1.
        warmup_start: the multiplier at step 0 of the warm-up.
        min_factor: the multiplier the cosine ends at.
        schedule: ``cosine`` (half a cosine period from 1 to ``min_factor`` after the warm-up) or ``constant``.

    Returns:
        The multiplier, in ``[min(warmup_start, min_factor), 1]``.

    Example:
        >>> [round(warmup_cosine(s, 10, 2), 3) for s in (0, 1, 2, 10)]
        [0.0, 0.5, 1.0, 0.0]
    """
    if warmup > 0 and step < warmup:
        return warmup_start + (1 - warmup_start) * step / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def lambda_lr(
    optimizer: torch.optim.Optimizer, total: int, warmup: int = 0, **kwargs
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`warmup_cosine` (keyword arguments pass through)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup, **kwargs))
