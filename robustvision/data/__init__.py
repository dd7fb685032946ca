"""Data sets behind one registry and one contract: float32 ``N x C x H x W`` images in [0, 1], int64 labels."""

from robustvision.data import cifar, digits, imagefolder, mnist  # noqa: F401  (registers the data sets)
from robustvision.data.base import (
    DATASETS,
    ImageClassificationDataset,
    TensorClassificationDataset,
    create_dataset,
    list_datasets,
)

__all__ = [
    "DATASETS",
    "ImageClassificationDataset",
    "TensorClassificationDataset",
    "create_dataset",
    "list_datasets",
]
