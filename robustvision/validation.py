"""Boundary checks shared by every module: one place that says what a valid image batch or mask is."""

from __future__ import annotations

import math

import torch


def check_images(
    x: object, name: str = "images", *, channels: int | None = None, allow_3d: bool = False
) -> torch.Tensor:
    """Validate a float image batch: ``N x C x H x W``, floating point, finite, values in [0, 1].

    Args:
        x: the tensor to check.
        name: how the error messages call it.
        channels: the required channel count, if any.
        allow_3d: accept a single ``C x H x W`` image and return it with a batch axis.

    Returns:
        The same tensor (with a batch axis added when ``allow_3d`` and it had none).

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: wrong number of dimensions or channels, NaN/inf values, or values outside [0, 1].
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if allow_3d and x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"{name} must be N x C x H x W, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if x.numel():
        # One pass: NaN propagates through min/max and inf shows up in them, so the extremes tell all.
        lo_t, hi_t = torch.aminmax(x.detach())
        lo, hi = float(lo_t), float(hi_t)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} contain NaN or infinite values")
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"{name} must have values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return x


def check_labels(y: object, n: int, name: str = "labels", num_classes: int | None = None) -> torch.Tensor:
    """Validate int64 class labels of length ``n`` (and below ``num_classes`` when given)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if y.dtype != torch.int64:
        raise TypeError(f"{name} must be int64 class indices, got {y.dtype}")
    if num_classes is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]")
    return y


def check_masks(m: object, name: str = "masks", ignore_index: int = 255) -> torch.Tensor:
    """Validate int64 segmentation masks ``N x H x W`` (``ignore_index`` marks pixels to ignore)."""
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
    if m.dim() != 3:
        raise ValueError(f"{name} must be N x H x W, got shape {tuple(m.shape)}")
    if m.dtype != torch.int64:
        raise TypeError(f"{name} must be int64, got {m.dtype}")
    return m
