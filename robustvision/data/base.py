"""Classification data sets: one contract (float32 C x H x W in [0, 1], int64 labels) and one registry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from robustvision.registry import Registry


class ImageClassificationDataset(Dataset):
    """A classification split. Items are ``(image C x H x W float32 in [0, 1], label int)``.

    Attributes:
        name: registry name of the data set.
        split: ``"train"`` or ``"test"``.
        classes: class names, index = label.
        image_size: side of the square images this split yields.
        channels: 1 (grey) or 3 (RGB).
    """

    name: str = "dataset"

    def __init__(self, split: str, classes: Sequence[str], image_size: int, channels: int) -> None:
        self.split = split
        self.classes = list(classes)
        self.image_size = int(image_size)
        self.channels = int(channels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images and labels stacked: ``(N x C x H x W float32, N int64)``."""
        if len(self) == 0:
            return torch.zeros(0, self.channels, self.image_size, self.image_size), torch.zeros(0, dtype=torch.long)
        xs, ys = zip(*(self[i] for i in range(len(self))), strict=True)
        return torch.stack(xs), torch.tensor(ys, dtype=torch.long)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "size": len(self),
            "classes": self.num_classes,
            "image_size": self.image_size,
            "channels": self.channels,
        }


class TensorClassificationDataset(ImageClassificationDataset):
    """A split held in memory as two tensors (small data sets: digits, MNIST, CIFAR-10)."""

    def __init__(
        self, name: str, split: str, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]
    ) -> None:
        from robustvision.validation import check_images, check_labels

        check_images(images, f"{name} images")
        check_labels(labels, images.shape[0], f"{name} labels", num_classes=len(classes))
        super().__init__(split, classes, image_size=images.shape[-1], channels=images.shape[1])
        self.name = name
        self.images = images.contiguous()
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels

    def subset(self, indices: torch.Tensor | Sequence[int]) -> TensorClassificationDataset:
        """A new in-memory split holding only ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return TensorClassificationDataset(self.name, self.split, self.images[idx], self.labels[idx], self.classes)


DATASETS: Registry[ImageClassificationDataset] = Registry("dataset")


def create_dataset(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    image_size: int | None = None,
    seed: int = 0,
    download: bool = False,
    **kwargs: Any,
) -> ImageClassificationDataset:
    """Build a registered data set split.

    Args:
        name: ``digits``, ``mnist``, ``cifar10``, ``imagefolder`` (see :func:`list_datasets`).
        split: ``train`` or ``test``.
        root: folder holding the files (not needed by ``digits``).
        image_size: resize to this side (each data set has a native default).
        seed: seed of any split the loader makes itself (``digits``).
        download: fetch the files into ``root`` or ``$ROBUSTVISION_HOME/data`` when missing (needs internet).

    Example:
        >>> ds = create_dataset("digits", split="test")
        >>> x, y = ds.tensors()
        >>> tuple(x.shape[1:]), x.dtype
        ((3, 32, 32), torch.float32)
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    builder = DATASETS.get(name)
    return builder(split=split, root=root, image_size=image_size, seed=seed, download=download, **kwargs)


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered data sets."""
    return DATASETS.list(pattern)


def require_root(name: str, root: str | Path | None) -> Path:
    """The data set folder, or a clear error when it was not given or does not exist."""
    if root is None:
        raise ValueError(f"data set {name!r} needs --root pointing at its files (or download=True where supported)")
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data set {name!r}: root folder {str(path)!r} does not exist")
    return path


def resize_batch(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize a batch to ``size x size`` with antialiased bilinear interpolation (no-op when already that size)."""
    if size is None or images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.clamp_(0, 1)
