"""CFContra's memory-efficient prototype bank and class-wise contrastive loss (Tang et al., arXiv:2103.12371).

Instead of SpCL-style per-pixel feature queues, each domain keeps one L2-normalised prototype per class: a
``C x D`` bank whose size depends only on the number of classes and the feature width, never on the image size or
the batch. Pixel features are contrasted against the bank (InfoNCE with temperature 0.07: the positive is the
pixel's own-class prototype, the negatives the other classes present in the bank). Prototypes start at class
means and follow batch class centres with momentum 0.9, re-normalised after each update. Target pixels take the
class of their nearest source prototype, and pixels whose two nearest prototypes are closer than 0.05 in distance
are left unlabelled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustvision.segmentation.uda.labels import IGNORE_INDEX


def flatten_features(features: torch.Tensor) -> torch.Tensor:
    """``N x D x h x w`` -> ``(N h w) x D`` rows."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``N x H x W`` int64 labels to the feature resolution."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def class_centers(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of normalised features and pixel counts.

    Args:
        features: ``N x D x h x w``.
        labels: ``N x h x w`` (already at feature resolution), ``ignore_index`` skipped.
        num_classes: ``C``.

    Returns:
        ``(sums C x D, counts C)``.
    """
    f = F.normalize(flatten_features(features), dim=1)
    y = labels.reshape(-1)
    keep = (y != ignore_index) & (y >= 0) & (y < num_classes)
    f, y = f[keep], y[keep]
    sums = torch.zeros(num_classes, f.shape[1], dtype=f.dtype, device=f.device).index_add_(0, y, f)
    counts = torch.bincount(y, minlength=num_classes).to(f.dtype)
    return sums, counts


class PrototypeMemory(nn.Module):
    """A ``C x D`` bank of unit-norm class prototypes for one domain.

    Args:
        num_classes: ``C``.
        feature_dim: ``D``.
        momentum: ``m`` in ``M_c <- normalize(m M_c + (1 - m) center_c)`` (CFContra: 0.9).
        temperature: ``tau`` of the contrastive softmax (CFContra: 0.07).

    Example:
        >>> bank = PrototypeMemory(19, 64)
        >>> bank.nbytes()  # 19 x 64 float32 prototypes + 19 presence flags
        4883
    """

    def __init__(self, num_classes: int, feature_dim: int, momentum: float = 0.9, temperature: float = 0.07) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.momentum = momentum
        self.temperature = temperature
        self.register_buffer("prototypes", torch.zeros(num_classes, feature_dim))
        self.register_buffer("present", torch.zeros(num_classes, dtype=torch.bool))

    def nbytes(self) -> int:
        """Bytes held by the bank (prototypes and presence flags)."""
        return self.prototypes.numel() * self.prototypes.element_size() + self.present.numel()

    @torch.no_grad()
    def initialise(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """Set prototypes to normalised class means (classes with no pixel stay absent)."""
        has = counts > 0
        self.prototypes.zero_()
        self.prototypes[has] = F.normalize(sums[has] / counts[has, None], dim=1)
        self.present.copy_(has)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Momentum update from one batch; classes absent from the batch are left unchanged.

        Args:
            features: ``N x D x h x w`` (detached inside).
            labels: ``N x h x w`` labels at feature resolution.

        Returns:
            A bool ``C`` vector of the classes updated.
        """
        sums, counts = class_centers(features.detach(), labels, self.num_classes)
        has = counts > 0
        if not has.any():
            return has
        centers = F.normalize(sums[has] / counts[has, None], dim=1)
        old = self.prototypes[has]
        # A class seen for the first time takes its centre directly (no momentum from a zero vector).
        new_class = ~self.present[has]
        mixed = self.momentum * old + (1.0 - self.momentum) * centers
        mixed[new_class] = centers[new_class]
        self.prototypes[has] = F.normalize(mixed, dim=1)
        self.present |= has
        return has

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pixel-to-prototype InfoNCE: ``-log softmax_c(<f, M_c> / tau)[y]`` over the classes in the bank.

        Args:
            features: ``N x D x h x w`` (gradients flow into them; the bank is a constant).
            labels: ``N x h x w`` labels at feature resolution; ``255`` and classes absent from the bank ignored.

        Returns:
            The mean over the kept pixels, 0 (with a graph) when none is kept.
        """
        f = F.normalize(flatten_features(features), dim=1)
        y = labels.reshape(-1)
        keep = (y != IGNORE_INDEX) & (y >= 0) & (y < self.num_classes)
        keep[keep.clone()] &= self.present[y[keep]]
        if not keep.any():
            return features.sum() * 0.0
        logits = f[keep] @ self.prototypes.detach().t() / self.temperature
        logits = logits.masked_fill(~self.present[None, :], float("-inf"))
        return F.cross_entropy(logits, y[keep])

    @torch.no_grad()
    def pseudo_labels(self, features: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
        """Label each pixel with its nearest prototype; ambiguous pixels get ``255``.

        A pixel is ambiguous when the Euclidean distances of its normalised feature to the nearest and the
        second-nearest prototypes differ by less than ``threshold`` (CFContra's ``cluster_threshold``, 0.05).

        Args:
            features: ``N x D x h x w``.
            threshold: the top-2 distance gap under which a pixel is ignored.

        Returns:
            ``N x h x w`` int64 labels.
        """
        n, _, h, w = features.shape
        f = F.normalize(flatten_features(features.detach()), dim=1)
        if int(self.present.sum()) == 0:
            return torch.full((n, h, w), IGNORE_INDEX, dtype=torch.long, device=features.device)
        dist = torch.cdist(f, self.prototypes)
        dist = dist.masked_fill(~self.present[None, :], float("inf"))
        k = min(2, int(self.present.sum()))
        top = dist.topk(k, dim=1, largest=False)
        labels = top.indices[:, 0].clone()
        if k == 2:
            labels[(top.values[:, 1] - top.values[:, 0]) < threshold] = IGNORE_INDEX
        return labels.view(n, h, w)
