"""The model contract: an ``nn.Module`` mapping [0, 1] images to logits, normalising inside.

:class:`PixelNormalizer` is the one place where [0, 1] pixels become a network's normalised input: every wrapper of
the package (zoo classifiers, DAS targets, EdgeFlow, the UDA segmenter) derives from it, so attacks, corruptions
and renderers all work in pixel space.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PixelNormalizer(nn.Module):
    """Holds ``mean``/``std`` as buffers and maps [0, 1] pixels to ``(x - mean) / std``.

    Args:
        mean, std: per-channel values (ImageNet's by default).
        persistent: save the buffers in the state dict (zoo classifiers do; networks whose normalisation is part
            of the architecture, not of the weights, do not).

    Shape:
        ``normalize``: ``N x C x H x W`` -> ``N x C x H x W``.

    Example:
        >>> PixelNormalizer().normalize(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 3, 2, 2])
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        persistent: bool = True,
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std need as many values, got {len(mean)} and {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=persistent)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=persistent)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(images - mean) / std`` for ``N x C x H x W`` images in [0, 1]."""
        return (images - self.mean) / self.std


class ImageClassifier(PixelNormalizer):
    """Wraps a network so it takes ``N x C x H x W`` images in [0, 1]; mean/std are registered buffers.

    Attributes:
        net: the raw network (timm, torchvision or ours) that sees normalised inputs.
        arch: zoo name of the architecture.
        family: ``cnn``, ``transformer`` or ``mlp`` (used by the analysis).
        num_classes, image_size, in_chans: what the network was built for.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        arch: str,
        family: str,
        num_classes: int,
        image_size: int,
        in_chans: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        mean = mean if mean is not None else (IMAGENET_MEAN if in_chans == 3 else (0.5,) * in_chans)
        std = std if std is not None else (IMAGENET_STD if in_chans == 3 else (0.5,) * in_chans)
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"mean/std need {in_chans} values, got {len(mean)} and {len(std)}")
        super().__init__(mean, std)
        self.net = net
        self.arch = arch
        self.family = family
        self.num_classes = num_classes
        self.image_size = image_size
        self.in_chans = in_chans

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != self.in_chans:
            raise ValueError(
                f"{self.arch} expects N x {self.in_chans} x H x W images in [0, 1], got shape {tuple(images.shape)}"
            )
        return self.net(self.normalize(images))

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, family={self.family!r}, num_classes={self.num_classes}, image_size={self.image_size}"
        )
