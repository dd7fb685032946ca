"""MNIST from its IDX files (``.gz`` or raw), as published by LeCun et al."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from robustvision.data.base import DATASETS, TensorClassificationDataset, require_root, resize_batch
from robustvision.runtime import home_dir

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a NumPy array, checking its magic number and size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read IDX file {str(path)!r}: {err}") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{str(path)!r} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise ValueError(f"{str(path)!r} is truncated: {len(data) - offset} bytes of data, expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(tuple(dims))


def find_idx(root: Path, stem: str) -> Path:
    """Locate ``stem`` or ``stem.gz`` under ``root`` (also in torchvision's ``MNIST/raw`` layout)."""
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"MNIST file {stem}[.gz] not found under {str(root)!r}")


@DATASETS.register("mnist", kind="classification", needs_root=True)
def load_mnist(
    split: str = "train",
    root=None,
    image_size: int | None = None,
    seed: int = 0,
    download: bool = False,
    rgb: bool = False,
    **_,
) -> TensorClassificationDataset:
    """MNIST ``split`` as 1 x 28 x 28 images (``rgb=True`` repeats the grey channel, ``image_size`` resizes)."""
    if download:
        from torchvision.datasets import MNIST

        target = Path(root) if root else home_dir() / "data"
        MNIST(str(target), train=split == "train", download=True)
        root = target
    path = require_root("mnist", root)
    img_stem, lbl_stem = MNIST_FILES[split]
    images = read_idx(find_idx(path, img_stem))
    labels = read_idx(find_idx(path, lbl_stem))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels under {str(path)!r}")
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    x = resize_batch(x, image_size)
    if rgb:
        x = x.expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorClassificationDataset("mnist", split, x, y, [str(i) for i in range(10)])
