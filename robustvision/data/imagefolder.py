"""Image trees on disk: ``<class>/<image>`` folders and the ImageNet validation layout (flat folder + labels file).

Unreadable, corrupt or truncated images are reported by path (a warning and ``dataset.skipped``) and left out; they
never crash a run silently.
"""

from __future__ import annotations

import csv
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from robustvision.data.base import DATASETS, ImageClassificationDataset, require_root

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
# ImageNet's validation protocol: resize the short side to size * 8/7 (256 for 224), then centre-crop size.
RESIZE_RATIO = 8 / 7


def decode_image(path: Path) -> Image.Image:
    """Decode an image file fully to RGB; a clear ``ValueError`` naming the file when it cannot be read."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot decode image {str(path)!r}: {err}") from err


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB image -> ``3 x H x W`` float32 in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resized_shape(width: int, height: int, size: int) -> tuple[int, int] | None:
    """The image size after the validation pipeline's resize (``None``: already ``size x size``).

    The short side becomes ``size * 8/7`` (256 for 224), or ``size`` when the image is smaller than that.
    """
    if (width, height) == (size, size):
        return None
    short = round(size * RESIZE_RATIO) if min(width, height) > size * RESIZE_RATIO else size
    scale = short / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the centred ``size x size`` crop."""
    left, top = (width - size) // 2, (height - size) // 2
    return left, top, left + size, top + size


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size * 8/7`` (``size`` for smaller images) and centre-crop ``size``.

    PIL bilinear: RobustART's and torchvision's ``Resize(256)`` + ``CenterCrop(224)`` for 224.
    """
    shape = resized_shape(*img.size, size)
    if shape is None:
        return img
    img = img.resize(shape, Image.BILINEAR)
    return img.crop(center_crop_box(*shape, size))


class ImageFolderDataset(ImageClassificationDataset):
    """Lazily decoded image files with labels. Bad files found while scanning are skipped and reported."""

    def __init__(
        self,
        name: str,
        split: str,
        samples: Sequence[tuple[Path, int]],
        classes: Sequence[str],
        image_size: int | None,
        verify: bool = True,
    ) -> None:
        self.skipped: list[tuple[str, str]] = []
        good: list[tuple[Path, int]] = []
        first_size = None
        for path, label in samples:
            if verify:
                try:
                    img = decode_image(path)
                except ValueError as err:
                    self.skipped.append((str(path), str(err)))
                    continue
                first_size = first_size or img.size
            good.append((path, label))
        if self.skipped:
            shown = "; ".join(p for p, _ in self.skipped[:5])
            more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            warnings.warn(f"{name}: skipped {len(self.skipped)} unreadable image(s): {shown}{more}", stacklevel=2)
        if image_size is None:
            image_size = first_size[0] if first_size and first_size[0] == first_size[1] else 224
        super().__init__(split, classes, image_size=image_size, channels=3)
        self.name = name
        self.samples = good

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return to_tensor(resize_center_crop(decode_image(path), self.image_size)), label


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def scan_class_tree(root: Path, classes: Sequence[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """``root/<class>/<image>`` -> samples and class names (sorted folder names unless ``classes`` is given)."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if classes is None:
        classes = folders
    missing = [c for c in folders if c not in classes]
    if missing:
        raise ValueError(f"{str(root)!r} has class folders not in the class list: {missing[:5]}")
    samples = [(p, classes.index(c)) for c in folders for p in list_images(root / c)]
    return samples, list(classes)


def read_labels_file(root: Path, labels_file: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """A flat folder plus a CSV ``filename,class_index[,wnid]`` (the ImageNet validation layout)."""
    if not labels_file.is_file():
        raise FileNotFoundError(f"labels file {str(labels_file)!r} not found")
    rows: list[tuple[Path, int, str]] = []
    with open(labels_file, newline="") as fh:
        reader = csv.DictReader(fh)
        needed = {"filename", "class_index"}
        if not reader.fieldnames or not needed <= set(reader.fieldnames):
            raise ValueError(f"{str(labels_file)!r} must have columns filename,class_index[,wnid]")
        for row in reader:
            rows.append((root / row["filename"], int(row["class_index"]), row.get("wnid") or ""))
    num_classes = max((r[1] for r in rows), default=-1) + 1
    names = [str(i) for i in range(num_classes)]
    for _, idx, wnid in rows:
        if wnid:
            names[idx] = wnid
    missing = [p.name for p, _, _ in rows if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise FileNotFoundError(
            f"{str(labels_file)!r} names {len(missing)} file(s) that are not in {str(root)!r}: {shown}"
        )
    return [(p, i) for p, i, _ in rows], names


@DATASETS.register("imagefolder", kind="classification", needs_root=True)
def load_imagefolder(
    split: str = "test",
    root=None,
    image_size: int | None = None,
    seed: int = 0,
    download: bool = False,
    labels_file: str | None = None,
    num_classes: int | None = None,
    **_,
) -> ImageFolderDataset:
    """Any ``<class>/<image>`` tree (``root/<split>/`` when it exists), or a flat folder with ``labels.csv``.

    Args:
        labels_file: CSV ``filename,class_index[,wnid]``; defaults to ``root/labels.csv`` when the folder is flat.
        num_classes: pad the class list (e.g. 1000 for ImageNet samples labelled with a subset of classes).
    """
    path = require_root("imagefolder", root)
    if (path / split).is_dir():
        path = path / split
    flat_labels = Path(labels_file) if labels_file else path / "labels.csv"
    if labels_file or (flat_labels.is_file() and not any(p.is_dir() for p in path.iterdir())):
        samples, classes = read_labels_file(path, flat_labels)
    else:
        samples, classes = scan_class_tree(path)
    if num_classes is not None:
        if num_classes < len(classes):
            raise ValueError(f"num_classes={num_classes} is below the {len(classes)} classes found in {str(path)!r}")
        classes = classes + [str(i) for i in range(len(classes), num_classes)]
    if not samples:
        raise ValueError(f"no images found under {str(path)!r} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return ImageFolderDataset("imagefolder", split, samples, classes, image_size)
