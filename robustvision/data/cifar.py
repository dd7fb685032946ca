"""CIFAR-10: the official pickled batches (``cifar-10-batches-py``) or an ImageFolder-style tree of its images."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from robustvision.data.base import (
    DATASETS,
    ImageClassificationDataset,
    TensorClassificationDataset,
    require_root,
    resize_batch,
)
from robustvision.data.imagefolder import ImageFolderDataset, scan_class_tree
from robustvision.runtime import home_dir

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def read_cifar_batches(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for name in CIFAR10_BATCHES[split]:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 batch {str(path)!r} not found")
        try:
            with open(path, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")  # the official format is a pickle of NumPy arrays
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
            raise ValueError(f"{str(path)!r} is not a CIFAR-10 pickled batch: {err}") from err
        xs.append(torch.from_numpy(data.copy()))
        ys.append(torch.from_numpy(labels))
    return torch.cat(xs).float().div_(255.0), torch.cat(ys)


@DATASETS.register("cifar10", kind="classification", needs_root=True)
def load_cifar10(
    split: str = "train", root=None, image_size: int | None = None, seed: int = 0, download: bool = False, **_
) -> ImageClassificationDataset:
    """CIFAR-10 ``split`` from pickled batches or a ``<class>/<image>`` tree (``root/<split>/`` when it exists)."""
    if download:
        from torchvision.datasets import CIFAR10

        target = Path(root) if root else home_dir() / "data"
        CIFAR10(str(target), train=split == "train", download=True)
        root = target
    path = require_root("cifar10", root)
    for folder in (path, path / "cifar-10-batches-py"):
        if any((folder / name).is_file() for names in CIFAR10_BATCHES.values() for name in names):
            x, y = read_cifar_batches(folder, split)
            return TensorClassificationDataset("cifar10", split, resize_batch(x, image_size), y, CIFAR10_CLASSES)
    tree = path / split if (path / split).is_dir() else path
    if not any(p.is_dir() for p in tree.iterdir()):
        raise FileNotFoundError(
            f"no CIFAR-10 batches or class folders under {str(path)!r} (expected cifar-10-batches-py/ or <class>/)"
        )
    samples, classes = scan_class_tree(tree, CIFAR10_CLASSES)
    return ImageFolderDataset("cifar10", split, samples, classes, image_size or 32)
