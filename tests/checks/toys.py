"""Toy models built to pass or to fail each health check, on a toy data set whose outcome is known by design.

Every toy reads one pixel ``v = x[:, 0, 0, 0]`` of all-zero 1 x 4 x 4 images labelled 0 and returns 4 logits
``[1, g(v), -5, -5]``: the attack succeeds where ``g(v) > 1``. PGD's l-inf random start puts ``v`` at 0 with
probability 1/2 (the lower half is clipped by the box) and uniformly in ``(0, eps]`` otherwise, so each landscape
``g`` fixes what share of points each attack breaks. ``EPS0`` is the budget under test (8/255).
"""

from __future__ import annotations

import torch
from torch import nn

EPS0 = 8 / 255
N = 100


def toy_data(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(n, 1, 4, 4), torch.zeros(n, dtype=torch.int64)


class Landscape(nn.Module):
    """Logits ``[1, g(v), -5, -5]`` for a 1-D landscape ``g`` of the first pixel."""

    def __init__(self, g) -> None:
        super().__init__()
        self.g = g
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the toy a device and parameters to freeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 0, 0]
        z1 = self.g(v) + 0 * self.anchor
        ones = torch.ones_like(z1)
        return torch.stack([ones, z1, -5 * ones, -5 * ones], dim=1)


def easy() -> Landscape:
    """Linear, broken once ``v > 0.2 eps``: every attack breaks every point at every budget of the grid."""
    return Landscape(lambda v: v / (0.2 * EPS0))


def linear_far() -> Landscape:
    """Linear, broken only once ``v > 0.9 eps``: a PGD with too few or too small steps falls short."""
    return Landscape(lambda v: v / (0.9 * EPS0))


def dead_zone() -> Landscape:
    """No gradient below ``v = 0.8 eps``, broken above ``0.85 eps``: only a lucky random start gets through."""
    return Landscape(lambda v: torch.relu(v - 0.8 * EPS0) / (0.05 * EPS0))


def bump() -> Landscape:
    """A narrow adversarial bump around ``v = 0.5 eps`` (zero gradient beyond ``1.1 eps``): a larger budget
    starts outside it and stays correct, so accuracy rises with eps."""
    return Landscape(lambda v: 2 * torch.relu(1 - (v - 0.5 * EPS0).abs() / (0.6 * EPS0)))
