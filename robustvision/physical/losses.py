"""DAS losses (Wang et al., CVPR 2021): attention distraction, classification, seed content, smoothness.

Total loss (paper, Eq. 9 with the code's defaults): ``L = L_d + lambda * L_s + t * L_smo`` (+ ``beta * L_cls``,
the targeted "not car" term this package adds so that attacks on its own small classifiers flip decisions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = [
    "DASWeights",
    "connected_regions",
    "attention_distraction_loss",
    "not_target_loss",
    "margin_loss",
    "content_loss",
    "smooth_loss",
]


@dataclass
class DASWeights:
    """Loss weights; defaults are the DAS reference code's (``lamb``, ``d1``, ``d2``, ``t``).

    Attributes:
        attention: weight of the attention-distraction loss ``L_d``.
        classification: weight of the targeted "not car" loss (0 in DAS; the naive attack uses it alone).
        content: ``lambda``, weight of the seed-content loss ``L_s`` (1e-4).
        edge: ``d1``, weight of texels on the seed's edges (0.9).
        non_edge: ``d2``, weight of the other texels (0.1).
        smooth: ``t``, weight of the smoothness loss (1e-4).
    """

    attention: float = 1.0
    classification: float = 1.0
    content: float = 1e-4
    edge: float = 0.9
    non_edge: float = 0.1
    smooth: float = 1e-4


def connected_regions(positive: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a boolean grid: ``(labels, count)`` with labels 1..count (0 = background)."""
    labels, count = ndimage.label(positive, structure=ndimage.generate_binary_structure(2, 1))
    return labels, int(count)


def attention_distraction_loss(cam: torch.Tensor) -> torch.Tensor:
    """DAS ``L_d``: spread the model's attention into small, scattered regions.

    For each map ``A`` (before ReLU): the 4-connected regions ``G_1..G_K`` of ``A > 0``;
    ``L_d = (1/K) sum_k sum_{G_k} tanh(A) / (hw + 1 - |G_k|)``, 0 when no cell is positive. Finding the
    regions is bookkeeping; the gradient flows through ``tanh(A)``. Averaged over the batch.

    Shape:
        cam: ``(N, h, w)``. Returns a scalar.
    """
    if cam.ndim != 3:
        raise ValueError(f"Grad-CAM maps must be (N, h, w), got {tuple(cam.shape)}")
    n, h, w = cam.shape
    t = torch.tanh(cam)
    total = cam.new_zeros(())
    pos = (cam > 0).detach().cpu().numpy()
    for i in range(n):
        labels, k = connected_regions(pos[i])
        if k == 0:
            continue
        lab = torch.from_numpy(labels).to(cam.device).flatten()
        sums = torch.zeros(k + 1, dtype=t.dtype, device=cam.device).index_add(0, lab, t[i].flatten())[1:]
        sizes = torch.bincount(lab, minlength=k + 1)[1:].to(t.dtype)
        total = total + (sums / (h * w + 1 - sizes)).mean()
    return total / n


def not_target_loss(logits: torch.Tensor, target_classes: list[int] | torch.Tensor) -> torch.Tensor:
    """Targeted "not car" loss ``-log(1 - p(car))`` with ``p(car)`` summed over ``target_classes``."""
    idx = torch.as_tensor(target_classes, device=logits.device).long()
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= logits.shape[1]:
        raise ValueError(f"target classes {idx.tolist()} are out of range for {logits.shape[1]} logits")
    mask = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    mask[idx] = True
    if mask.all():
        raise ValueError("every class is a target class; nothing is left to push toward")
    logp = F.log_softmax(logits, 1)
    return -torch.logsumexp(logp[:, ~mask], 1).mean()


def margin_loss(logits: torch.Tensor, target_classes: list[int] | torch.Tensor, kappa: float = 5.0) -> torch.Tensor:
    """Targeted C&W-style margin ``relu(max_car z - max_other z + kappa)``, averaged over the batch.

    Unlike ``-log(1 - p(car))``, whose gradient vanishes once a view is classified "not car", this keeps pushing
    until the best non-car logit leads by ``kappa`` on every view, which leaves slack for unseen poses.
    """
    idx = torch.as_tensor(target_classes, device=logits.device).long()
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= logits.shape[1]:
        raise ValueError(f"target classes {idx.tolist()} are out of range for {logits.shape[1]} logits")
    if kappa < 0:
        raise ValueError(f"margin kappa must be >= 0, got {kappa}")
    mask = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    mask[idx] = True
    if mask.all():
        raise ValueError("every class is a target class; nothing is left to push toward")
    car = logits[:, mask].max(1).values
    other = logits[:, ~mask].max(1).values
    return F.relu(car - other + kappa).mean()


def content_loss(param: torch.Tensor, seed_param: torch.Tensor, edge: torch.Tensor, d1: float = 0.9, d2: float = 0.1):
    """DAS seed-content loss ``d1 * sum E (P - P0)^2 + d2 * sum (1 - E)(P - P0)^2`` in pre-tanh space."""
    if param.shape != seed_param.shape:
        raise ValueError(f"texture {tuple(param.shape)} and seed {tuple(seed_param.shape)} differ in shape")
    diff = (param - seed_param) ** 2
    e = edge.to(diff.dtype).expand_as(diff)
    return d1 * (e * diff).sum() + d2 * ((1 - e) * diff).sum()


def smooth_loss(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DAS smoothness: ``sum M_ij [(x_{i+1,j} - x_ij)^2 + (x_{i,j+1} - x_ij)^2]`` over the paint mask.

    Shape:
        images: ``(N, 3, H, W)``; mask: ``(N, 1, H, W)`` (paint coverage). Returns a scalar (sum / N).
    """
    dx = (images[..., 1:, :-1] - images[..., :-1, :-1]) ** 2
    dy = (images[..., :-1, 1:] - images[..., :-1, :-1]) ** 2
    m = mask[..., :-1, :-1]
    return ((dx + dy) * m).sum() / images.shape[0]
