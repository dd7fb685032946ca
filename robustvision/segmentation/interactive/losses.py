"""Losses: RITM's normalized focal loss, and the class-balanced boundary loss for EdgeFlow's edge head.

References:
    Sofiiuk et al., "AdaptIS" / RITM ``isegm/model/losses.py`` (NormalizedFocalLossSigmoid, alpha 0.5,
    gamma 2); Xie and Tu, "Holistically-Nested Edge Detection" (class-balanced BCE for thin edge targets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalized_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    alpha: float = 0.5,
    gamma: float = 2.0,
) -> torch.Tensor:
    """RITM's normalized focal loss (NFL), averaged over images.

    ``p_t = 1 - |y - sigmoid(z)|``, ``beta = (1 - p_t)**gamma`` rescaled (detached) so that ``sum(beta)``
    over valid pixels equals their count; ``loss = -alpha_t * beta * log(p_t)`` averaged over valid pixels.

    Args:
        logits: ``B x 1 x H x W``.
        target: ``B x 1 x H x W`` in {0, 1}.
        valid: optional ``B x 1 x H x W`` {0, 1} weights (0 = ignore).
        alpha: positive-class weight (``alpha_t = alpha`` for y=1, ``1 - alpha`` for y=0).
        gamma: focusing exponent.

    Returns:
        A scalar.
    """
    valid = torch.ones_like(target) if valid is None else valid.float()
    prob = torch.sigmoid(logits)
    pt = torch.where(target > 0.5, prob, 1 - prob)
    alpha_t = torch.where(target > 0.5, torch.full_like(prob, alpha), torch.full_like(prob, 1 - alpha)) * valid
    beta = (1 - pt) ** gamma
    dims = (1, 2, 3)
    count = valid.sum(dim=dims, keepdim=True)
    beta_sum = (beta * valid).sum(dim=dims, keepdim=True)
    mult = (count / (beta_sum + 1e-8)).detach()
    beta = beta * mult
    loss = -alpha_t * beta * torch.log(pt.clamp_min(1e-8))
    return (loss.sum(dim=dims) / count.clamp_min(1).squeeze()).mean()


def nfl_beta(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """The normalised focusing weights of :func:`normalized_focal_loss` (for checking ``sum == #pixels``)."""
    prob = torch.sigmoid(logits)
    pt = torch.where(target > 0.5, prob, 1 - prob)
    beta = (1 - pt) ** gamma
    return beta * (beta[0].numel() / beta.sum(dim=(1, 2, 3), keepdim=True))


def boundary_loss(logits: torch.Tensor, edge_target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Class-balanced BCE on a thin boundary band: edge pixels weighted by the non-edge fraction and vice versa."""
    valid = torch.ones_like(edge_target) if valid is None else valid.float()
    pos = (edge_target * valid).sum(dim=(1, 2, 3), keepdim=True)
    tot = valid.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1)
    w_pos = (1 - pos / tot).expand_as(edge_target)
    w_neg = (pos / tot).expand_as(edge_target)
    weight = torch.where(edge_target > 0.5, w_pos, w_neg) * valid
    loss = F.binary_cross_entropy_with_logits(logits, edge_target, weight=weight, reduction="none")
    return (loss.sum(dim=(1, 2, 3)) / (weight.sum(dim=(1, 2, 3)) + 1e-8)).mean()


def masked_bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Plain BCE over valid pixels (RITM's aux loss)."""
    valid = torch.ones_like(target) if valid is None else valid.float()
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid
    return loss.sum() / valid.sum().clamp_min(1)
