"""Data for segmentation domain adaptation: GTA5 and Cityscapes layouts, folders of photos, and file readers.

Every data set yields ``(image 3 x H x W float32 in [0, 1], mask H x W int64)`` with 19 Cityscapes train ids and
``255`` = ignore; unlabelled sets (target photos) yield all-``255`` masks and have ``labelled = False``. Images are
resized to ``image_size`` (bilinear with antialiasing) and labels with nearest neighbour.

Layouts:
    - GTA5: ``ROOT/images/*.png`` and ``ROOT/labels/*.png`` (same file names; Cityscapes label ids).
    - Cityscapes: ``ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
      ``ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png``.
    - photos: any folder of ``.png``/``.jpg``/``.jpeg``/``.bmp``/``.webp`` files (searched recursively).

The generated benchmark lives in :mod:`robustvision.segmentation.uda.synthetic`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from robustvision.segmentation.uda.labels import CLASS_NAMES, IGNORE_INDEX, ids_to_train_ids

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def parse_size(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"64x128"`` (height x width) or a pair -> ``(H, W)``; ``None`` keeps native sizes."""
    if text is None or isinstance(text, tuple):
        return text
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"image size must look like HEIGHTxWIDTH (e.g. 64x128), got {text!r}") from None
    if h < 8 or w < 8:
        raise ValueError(f"image size must be at least 8x8, got {h}x{w}")
    return h, w


def load_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB image file as ``H x W x 3`` float32 in [0, 1] (palette and grey images converted), resized if asked."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR, reducing_gap=None)
        return np.asarray(im, dtype=np.float32) / 255.0


def load_label_ids(path: Path, image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A label-id image mapped to train ids, resized (nearest, with a warning) when its size differs from the image.

    Args:
        path: a single-channel PNG of Cityscapes label ids (GTA5 ``labels/`` or ``*_gtFine_labelIds.png``).
        image_hw: the ``(H, W)`` of the matching image file.

    Raises:
        ValueError: a multi-channel file, or ids outside the Cityscapes table.
    """
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{path}: expected a single-channel label-id PNG, got mode {im.mode}")
        if image_hw is not None and im.size != (image_hw[1], image_hw[0]):
            warnings.warn(
                f"{path}: label is {im.size[1]}x{im.size[0]} but its image is {image_hw[0]}x{image_hw[1]}; "
                "resizing the label with nearest neighbour",
                stacklevel=2,
            )
            im = im.resize((image_hw[1], image_hw[0]), Image.NEAREST)
        ids = np.asarray(im)
    return ids_to_train_ids(ids.astype(np.int64), source=str(path))


def resize_mask(mask: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Nearest-neighbour resize of an ``H x W`` train-id mask."""
    if size is None or mask.shape == size:
        return mask
    im = Image.fromarray(mask.astype(np.uint8), mode="L").resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(im).astype(np.int64)


def _to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(mask.astype(np.int64))


class SegmentationData(Dataset):
    """Common behaviour: ``classes``, ``num_classes``, ``labelled``, ``image_size`` and ``tensors()``."""

    classes: tuple[str, ...] = CLASS_NAMES
    num_classes: int = len(CLASS_NAMES)
    labelled: bool = True
    image_size: tuple[int, int] | None = None
    name: str = "segmentation"

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All items stacked: ``(N x 3 x H x W, N x H x W)`` (needs a fixed ``image_size``)."""
        if len(self) == 0:
            raise ValueError(f"{self.name}: the data set is empty")
        items = [self[i] for i in range(len(self))]
        shapes = {tuple(x.shape) for x, _ in items}
        if len(shapes) > 1:
            raise ValueError(f"{self.name}: images differ in size {sorted(shapes)[:3]}; pass an image_size")
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


class PairedFolder(SegmentationData):
    """Image/label-id pairs given as two path lists (the base of the GTA5 and Cityscapes readers)."""

    def __init__(self, images: list[Path], labels: list[Path] | None, image_size: tuple[int, int] | None) -> None:
        self.images = images
        self.labels = labels
        self.labelled = labels is not None
        self.image_size = parse_size(image_size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        native = load_image(self.images[i])
        hw = native.shape[:2]
        if self.labels is not None:
            mask = resize_mask(load_label_ids(self.labels[i], hw), self.image_size)
        else:
            mask = np.full(self.image_size or hw, IGNORE_INDEX, dtype=np.int64)
        image = load_image(self.images[i], self.image_size) if self.image_size else native
        return _to_tensors(image, mask)


def _require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{what}: {path} is not a folder")
    return path


class GTA5(PairedFolder):
    """GTA5 ("Playing for Data", Richter et al. 2016): ``ROOT/images/*.png`` with ``ROOT/labels/*.png``.

    Args:
        root: the GTA5 folder.
        image_size: ``(H, W)`` to resize to, or ``None``.
        list_file: optional ADVENT-style list of file names (e.g. ``gta5_list/train.txt``) to restrict to.

    Raises:
        FileNotFoundError: missing ``images/``/``labels/`` or a label file for an image.
        ValueError: no image at all.
    """

    name = "gta5"

    def __init__(
        self, root: str | Path, image_size: tuple[int, int] | str | None = None, list_file: str | Path | None = None
    ) -> None:
        root = Path(root)
        img_dir = _require_dir(root / "images", "GTA5 images")
        lab_dir = _require_dir(root / "labels", "GTA5 labels")
        if list_file is not None:
            names = [ln.strip() for ln in Path(list_file).read_text().splitlines() if ln.strip()]
            images = [img_dir / n for n in names]
            missing = [str(p) for p in images if not p.exists()]
            if missing:
                raise FileNotFoundError(f"GTA5: {len(missing)} listed images are missing, e.g. {missing[0]}")
        else:
            images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise ValueError(f"GTA5: no images in {img_dir}")
        labels = [lab_dir / (p.stem + ".png") for p in images]
        missing = [str(p) for p in labels if not p.exists()]
        if missing:
            raise FileNotFoundError(f"GTA5: {len(missing)} images have no label file, e.g. {missing[0]}")
        super().__init__(images, labels, image_size)


class Cityscapes(PairedFolder):
    """Cityscapes (Cordts et al. 2016): ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with gtFine label ids.

    Args:
        root: the folder holding ``leftImg8bit/`` (and ``gtFine/`` when labelled).
        split: ``train``, ``val``, ``test``, or ``None`` for every split found.
        image_size: ``(H, W)`` to resize to, or ``None``.
        labelled: read ``*_gtFine_labelIds.png`` (an error when one is missing); ``False`` for target training.
    """

    name = "cityscapes"

    def __init__(
        self,
        root: str | Path,
        split: str | None = "val",
        image_size: tuple[int, int] | str | None = None,
        labelled: bool = True,
    ) -> None:
        root = Path(root)
        img_root = _require_dir(root / "leftImg8bit", "Cityscapes images")
        if split is not None:
            if not (img_root / split).is_dir():
                found = sorted(p.name for p in img_root.iterdir() if p.is_dir())
                raise FileNotFoundError(f"Cityscapes: no split {split!r} under {img_root} (found {found})")
            img_root = img_root / split
        images = sorted(img_root.rglob("*_leftImg8bit.png"))
        if not images:
            raise ValueError(f"Cityscapes: no *_leftImg8bit.png under {img_root}")
        labels = None
        if labelled:
            labels = []
            for p in images:
                rel = p.relative_to(root / "leftImg8bit")
                lab = root / "gtFine" / rel.parent / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
                if not lab.exists():
                    raise FileNotFoundError(f"Cityscapes: no label {lab} for {p}")
                labels.append(lab)
        super().__init__(images, labels, image_size)


class PhotoFolder(PairedFolder):
    """Any folder of unlabelled photos (searched recursively), used as the target domain.

    Raises:
        ValueError: the folder holds no image file.
    """

    name = "photos"

    def __init__(self, root: str | Path, image_size: tuple[int, int] | str | None = (64, 128)) -> None:
        root = _require_dir(Path(root), "target photos")
        images = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise ValueError(f"no images found in {root} (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)")
        if image_size is None:
            raise ValueError("photos need an image_size (HEIGHTxWIDTH) so that they can be batched")
        super().__init__(images, None, image_size)


class TensorSegmentation(SegmentationData):
    """In-memory images and masks (what the generated benchmark produces)."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, labelled: bool = True, name: str = "tensors"):
        if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} do not match")
        self.images, self.masks = images, masks
        self.labelled = labelled
        self.image_size = tuple(images.shape[-2:])
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.masks
