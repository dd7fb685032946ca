"""Deliberately gradient-masked models: the negative controls of the health checks.

Two textbook ways to hide gradients without adding robustness (Athalye et al. 2018; Carlini et al. 2019, §5):

- ``temperature``: multiply the logits by a large temperature. The prediction is unchanged, but the softmax
  saturates in float32, so the cross-entropy gradient PGD follows is exactly zero on confidently classified
  points and PGD never leaves its random start. Scale-invariant losses (DLR) and score-based attacks (Square) are
  not fooled.
- ``relu``: a ReLU on the logits, as the GBN reference code has it. Negative logits lose their gradient; on a
  confident point only the true logit carries one and the saturated softmax zeroes it.

Example:
    >>> masked = MaskedLogits(model, mode="temperature")   # doctest: +SKIP
    >>> checks.run(masked, (images, labels)).failed        # doctest: +SKIP
    ['gradients', 'unbounded', 'apgd_dlr', 'square']
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

MaskMode = Literal["temperature", "relu"]
MASK_MODES: tuple[str, ...] = ("temperature", "relu")


class MaskedLogits(nn.Module):
    """Wrap a classifier so its logits pass through a gradient-masking head; predictions are unchanged.

    Args:
        model: maps ``N x C x H x W`` images in [0, 1] to logits.
        mode: ``temperature`` (logits x ``temperature``) or ``relu`` (ReLU on the logits).
        temperature: the factor of ``temperature`` mode.

    Shape: ``N x C x H x W`` in [0, 1] -> ``N x K`` logits.
    """

    def __init__(self, model: nn.Module, mode: MaskMode = "temperature", temperature: float = 1e4) -> None:
        super().__init__()
        if mode not in MASK_MODES:
            raise ValueError(f"unknown mask mode {mode!r}; expected one of {MASK_MODES}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.mode = mode
        self.temperature = float(temperature)
        # Keep the wrapped model's identity for cards and messages.
        for attr in ("arch", "family", "num_classes", "image_size", "in_chans"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        if self.mode == "relu":
            return torch.relu(logits)
        return logits * self.temperature

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}" + (f", temperature={self.temperature:g}" if self.mode == "temperature" else "")
