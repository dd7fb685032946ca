"""scikit-learn's bundled handwritten digits (1,797 8x8 images), upsampled to 32x32 RGB: the embedded default."""

from __future__ import annotations

import torch

from robustvision.data.base import DATASETS, TensorClassificationDataset, resize_batch

DIGITS_TEST_FRACTION = 0.25  # a stratified 75/25 split: 1,347 train and 450 test images


@DATASETS.register("digits", kind="classification", needs_root=False)
def load_digits(
    split: str = "train", root=None, image_size: int | None = None, seed: int = 0, download: bool = False, **_
) -> TensorClassificationDataset:
    """The digits split: values 0..16 scaled to [0, 1], bilinear upsampling to 32x32, grey copied to RGB.

    The train/test split is stratified and seeded by ``seed`` so every run and every process agrees on it.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    idx = torch.arange(len(labels)).numpy()
    train_idx, test_idx = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, random_state=seed, stratify=labels.numpy()
    )
    chosen = torch.from_numpy(train_idx if split == "train" else test_idx)
    size = image_size or 32
    x = torch.nn.functional.interpolate(images[chosen], size=(size, size), mode="bilinear", align_corners=False)
    x = resize_batch(x.clamp_(0, 1), size).expand(-1, 3, -1, -1).contiguous()
    return TensorClassificationDataset("digits", split, x, labels[chosen], [str(i) for i in range(10)])
