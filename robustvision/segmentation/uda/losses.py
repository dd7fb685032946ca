"""Segmentation losses: cross-entropy on upsampled logits and ADVENT's normalised entropy (Vu et al., CVPR 2019)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustvision.segmentation.uda.labels import IGNORE_INDEX


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``N x C x h x w`` logits to ``size`` (ADVENT's ``interp``)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def seg_cross_entropy(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel cross-entropy of feature-resolution logits upsampled to the mask size.

    Args:
        logits: ``N x C x h x w``.
        masks: ``N x H x W`` int64 train ids, ``ignore_index`` ignored.

    Returns:
        The mean over labelled pixels (0 when none is labelled, so a batch of void pixels adds nothing).
    """
    up = upsample_logits(logits, tuple(masks.shape[-2:]))
    if not (masks != ignore_index).any():
        return up.sum() * 0.0
    return F.cross_entropy(up, masks, ignore_index=ignore_index)


def entropy_map(probs: torch.Tensor) -> torch.Tensor:
    """Per-pixel Shannon entropy normalised by ``log C``: ``N x C x H x W`` probabilities -> ``N x H x W`` in [0, 1]."""
    c = probs.shape[1]
    return -(probs * torch.log(probs.clamp_min(1e-30))).sum(1) / math.log(c)


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """ADVENT's MinEnt loss: mean normalised entropy of the softmax prediction, a scalar in [0, 1].

    ``-sum_c p_c log2 p_c / (N H W log2 C)``, computed on feature-resolution logits upsampled as in ADVENT's
    training loop.

    Args:
        logits: ``N x C x H x W`` class scores.

    Example:
        >>> float(entropy_loss(torch.zeros(1, 19, 4, 4)))  # uniform prediction: maximal entropy
        1.0
    """
    return entropy_map(F.softmax(logits, dim=1)).mean()
