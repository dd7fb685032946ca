"""Data for interactive segmentation: the public evaluation layouts and a download-free training set.

Evaluation sets (f-BRS/RITM layouts; ``mask`` arrays are int64 0 = background, 1 = object, 255 = ignore):

- GrabCut: ``data_GT/<name>.<jpg|bmp|png>`` + ``boundary_GT/<name>.<bmp|png>`` (255 object, 128 ignore band).
- Berkeley: ``images/`` + ``masks/`` (also ``img/`` + ``gt/``), same encoding.
- DAVIS: ``img/*.jpg`` + ``gt/*.png`` (any channel > 0 = object).
- SBD: ``img/*.jpg`` + ``inst/*.mat`` (``GTinst.Segmentation``) + ``train.txt``/``val.txt``, one sample per
  instance; thin instances (area / box area < 0.08) dropped as RITM does.

Real training sets: SBD (above, ``train.txt``) and COCO-format instance annotations (:class:`CocoInstances`):
``annotations/instances_train2017.json`` (COCO) and/or ``annotations/lvis_v1_train.json`` (LVIS v1) with the
images in ``train2017/``, read lazily.

Training without downloads (:class:`SyntheticObjects`): photos shipped with scikit-image, scikit-learn and
matplotlib, plus ``../shared/data/backgrounds`` when present. Each sample is either an object *pasted*
(texture from one photo, a generated shape, feathered alpha, colour jitter) onto a crop of another photo,
or an *in-place* object: a union of adjacent Felzenszwalb regions of the photo itself, whose boundary
therefore follows real image edges. No evaluation image (GrabCut/BSDS, Berkeley, DAVIS) is ever used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from robustvision.registry import Registry
from robustvision.runtime import require_extra, seed_from_key, shared_data_dir

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class ISegSample:
    """One instance: ``image`` ``H x W x 3`` uint8 RGB, ``mask`` ``H x W`` int64 (0/1/255)."""

    name: str
    image: np.ndarray
    mask: np.ndarray

    def __iter__(self):  # unpacks as (name, image, mask), the triple evaluate_dataset takes
        return iter((self.name, self.image, self.mask))


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as ``H x W x 3`` uint8 RGB; a clear error when unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_gray(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise ValueError(f"cannot read mask {path}")
    return m


def encode_fbrs_mask(raw: np.ndarray) -> np.ndarray:
    """f-BRS GrabCut/Berkeley encoding -> int64 mask: > 128 object, == 128 ignore (255), else background."""
    if raw.ndim == 3:
        raw = raw[..., 0]
    out = (raw > 128).astype(np.int64)
    out[raw == 128] = 255
    return out


def _files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS}


def _paired(
    root: Path, image_dir: str, mask_dir: str, encode: Callable[[np.ndarray], np.ndarray], limit: int | None
) -> list[ISegSample]:
    images, masks = _files(root / image_dir), _files(root / mask_dir)
    if not images:
        raise FileNotFoundError(f"no images in {root / image_dir}")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) in {root / image_dir} have no mask in {root / mask_dir}: {missing[:5]}"
        )
    out = []
    for name in sorted(images)[:limit]:
        img = read_rgb(images[name])
        mask = encode(_read_gray(masks[name]))
        if mask.shape != img.shape[:2]:
            raise ValueError(
                f"mask {masks[name]} is {mask.shape[1]}x{mask.shape[0]} but its image is {img.shape[1]}x{img.shape[0]}"
            )
        out.append(ISegSample(name, img, mask))
    return out


ISEG_DATASETS: Registry[list[ISegSample]] = Registry("interactive segmentation data set")


@ISEG_DATASETS.register("grabcut", layout="data_GT/ + boundary_GT/")
def load_grabcut(root: str | Path | None = None, limit: int | None = None) -> list[ISegSample]:
    """GrabCut in the f-BRS layout; ``root=None`` uses ``../shared/data/grabcut`` (20 of the 50 images).

    Masks without an image are skipped (the shared copy is partial); an image without its mask is an error.
    """
    if root is None:
        shared = shared_data_dir()
        if shared is None or not (shared / "grabcut").is_dir():
            raise FileNotFoundError("no GrabCut root given and ../shared/data/grabcut is absent; pass --root")
        root = shared / "grabcut"
    return _paired(Path(root), "data_GT", "boundary_GT", encode_fbrs_mask, limit)


@ISEG_DATASETS.register("berkeley", layout="images/ + masks/ (or img/ + gt/)")
def load_berkeley(root: str | Path, limit: int | None = None) -> list[ISegSample]:
    """Berkeley (McGuinness) in the f-BRS layout."""
    root = Path(root)
    dirs = ("images", "masks") if (root / "images").is_dir() else ("img", "gt")
    return _paired(root, *dirs, encode_fbrs_mask, limit)


@ISEG_DATASETS.register("davis", layout="img/ + gt/")
def load_davis(root: str | Path, limit: int | None = None) -> list[ISegSample]:
    """DAVIS interactive subset: any channel > 0 is object."""

    def encode(raw: np.ndarray) -> np.ndarray:
        return (raw.reshape(raw.shape[0], raw.shape[1], -1).max(axis=-1) > 0).astype(np.int64)

    return _paired(Path(root), "img", "gt", encode, limit)


@ISEG_DATASETS.register("sbd", layout="img/ + inst/*.mat + train.txt/val.txt")
def load_sbd(root: str | Path, split: str = "val", limit: int | None = None) -> list[ISegSample]:
    """SBD instances (one sample per instance; RITM drops thin ones: area / box area < 0.08)."""
    from scipy.io import loadmat

    root = Path(root)
    if (root / "dataset").is_dir():
        root = root / "dataset"
    lst = root / f"{split}.txt"
    if not lst.is_file():
        raise FileNotFoundError(f"SBD split list {lst} does not exist (split must be train or val)")
    out: list[ISegSample] = []
    for name in lst.read_text().split():
        img = read_rgb(root / "img" / f"{name}.jpg")
        inst = loadmat(str(root / "inst" / f"{name}.mat"))["GTinst"][0][0][0].astype(np.int64)
        for k in np.unique(inst):
            if k in (0, 255):
                continue
            obj = inst == k
            ys, xs = np.where(obj)
            if obj.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)) < 0.08:
                continue
            mask = obj.astype(np.int64)
            mask[inst == 255] = 255
            out.append(ISegSample(f"{name}_{k}", img, mask))
            if limit is not None and len(out) >= limit:
                return out
    return out


def load_iseg_dataset(name: str, root: str | Path | None = None, limit: int | None = None) -> list[ISegSample]:
    """Load an evaluation set by name (``grabcut``, ``berkeley``, ``davis``, ``sbd``)."""
    builder = ISEG_DATASETS.get(name)
    if root is None and name != "grabcut":
        raise ValueError(f"data set {name!r} needs --root (only grabcut has a default)")
    return builder(root=root, limit=limit) if root is not None else builder(limit=limit)


# ------------------------------------------------------------------------------- synthetic training set


def package_photos(include_backgrounds: bool = True) -> list[np.ndarray]:
    """Photos shipped by installed packages (and ../shared/data/backgrounds when present), RGB uint8.

    Grayscale textures (brick, grass, gravel, ...) are included as RGB. None of these is an evaluation image.
    """
    import matplotlib.cbook
    import skimage.data as skd
    from sklearn.datasets import load_sample_images

    photos: list[np.ndarray] = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina",
                 "hubble_deep_field", "colorwheel", "camera", "coins", "moon", "brick", "grass", "gravel",
                 "clock", "page"):  # fmt: skip
        try:
            img = getattr(skd, name)()
        except Exception:  # noqa: S112 -- a data file that this skimage build lacks is simply not used
            continue
        photos.append(np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3])
    for fname in ("motorcycle_left.png", "motorcycle_right.png"):
        p = Path(skd.data_dir) / fname
        if p.is_file():
            photos.append(read_rgb(p))
    photos.extend(load_sample_images().images)
    sample_dir = Path(matplotlib.cbook._get_data_path("sample_data"))
    for fname in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        if (sample_dir / fname).is_file():
            photos.append(read_rgb(sample_dir / fname))
    if include_backgrounds:
        shared = shared_data_dir()
        if shared is not None and (shared / "backgrounds").is_dir():
            photos.extend(read_rgb(p) for p in sorted((shared / "backgrounds").iterdir()) if p.suffix == ".png")
    # Downscale large photos once: crops are small and this keeps memory and resize time low.
    out = []
    for p in photos:
        s = 640 / max(p.shape[:2])
        out.append(cv2.resize(p, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else p)
    return [np.ascontiguousarray(p, dtype=np.uint8) for p in out]


def _random_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    h, w = photo.shape[:2]
    scale = rng.uniform(0.35, 1.0) * min(h, w)
    side = max(16, int(scale))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    return crop[:, ::-1].copy() if rng.random() < 0.5 else crop


def _random_shape(size: int, rng: np.random.Generator, horse: np.ndarray | None) -> np.ndarray:
    """A random object silhouette: smooth blob, star polygon, ellipse union or the skimage horse."""
    kind = rng.choice(
        ["blob", "polygon", "ellipses", "horse"] if horse is not None else ["blob", "polygon", "ellipses"]
    )
    m = np.zeros((size, size), np.uint8)
    c = size / 2
    r = size * rng.uniform(0.15, 0.38)
    if kind == "blob":
        noise = rng.standard_normal((size // 8 + 2, size // 8 + 2)).astype(np.float32)
        noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[:size, :size]
        field = noise * 0.6 - ((yy - c) ** 2 + (xx - c) ** 2) / (r * r) + 1.0
        m = (field > 0).astype(np.uint8)
    elif kind == "polygon":
        n = int(rng.integers(3, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.5, 1.2, n)
        pts = np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], -1).astype(np.int32)
        cv2.fillPoly(m, [pts], 1)
    elif kind == "ellipses":
        for _ in range(int(rng.integers(1, 4))):
            center = (int(c + rng.uniform(-0.3, 0.3) * r), int(c + rng.uniform(-0.3, 0.3) * r))
            axes = (int(r * rng.uniform(0.3, 1.0)), int(r * rng.uniform(0.3, 1.0)))
            cv2.ellipse(m, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        s = 2 * r / max(horse.shape)
        hm = cv2.resize(horse, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
        hm = hm[:size, :size]
        y0, x0 = (size - hm.shape[0]) // 2, (size - hm.shape[1]) // 2
        m[y0 : y0 + hm.shape[0], x0 : x0 + hm.shape[1]] = hm
        if rng.random() < 0.5:
            m = m[:, ::-1].copy()
    # Random placement (shift) and rotation.
    rot = cv2.getRotationMatrix2D((c, c), float(rng.uniform(-40, 40)), 1.0)
    rot[:, 2] += rng.uniform(-0.25, 0.25, 2) * size
    m = cv2.warpAffine(m, rot, (size, size), flags=cv2.INTER_NEAREST)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n > 2:  # keep the largest component: one object per sample
        m = (lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    return m


def _region_object(image: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """An in-place object: adjacent Felzenszwalb regions grown from a random seed to 5-40% of the image."""
    from skimage.segmentation import felzenszwalb

    size = image.shape[0]
    seg = felzenszwalb(image, scale=float(rng.uniform(50, 300)), sigma=0.8, min_size=int(size * size * 0.004))
    target = rng.uniform(0.05, 0.4) * size * size
    start = seg[rng.integers(size // 6, 5 * size // 6), rng.integers(size // 6, 5 * size // 6)]
    m = seg == start
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(30):
        if m.sum() >= target:
            break
        ring = cv2.dilate(m.astype(np.uint8), kernel).astype(bool) & ~m
        neigh = np.unique(seg[ring])
        if neigh.size == 0:
            break
        m |= seg == rng.choice(neigh)
    frac = m.mean()
    if frac < 0.02 or frac > 0.6:
        return None
    return m.astype(np.uint8)


class SyntheticObjects(Dataset):
    """Download-free interactive-segmentation training samples (see the module docstring).

    Sample ``i`` is a pure function of ``(seed, i)``, so a run replays exactly.

    Args:
        length: number of samples per epoch.
        size: square side of each sample.
        seed: base seed.
        include_backgrounds: also use ``../shared/data/backgrounds`` when present.
        region_prob: probability of an in-place (Felzenszwalb-region) object instead of a pasted one.

    Returns (per item):
        ``(image 3 x size x size float32 in [0, 1], mask size x size int64 0/1)``.
    """

    def __init__(
        self,
        length: int = 10000,
        size: int = 160,
        seed: int = 0,
        include_backgrounds: bool = True,
        region_prob: float = 0.35,
    ) -> None:
        if size < 32:
            raise ValueError(f"size must be >= 32, got {size}")
        self.length, self.size, self.seed, self.region_prob = length, size, seed, region_prob
        self.photos = package_photos(include_backgrounds)
        import skimage.data as skd

        horse = skd.horse()
        horse = ~horse if horse.mean() > 0.5 else horse
        self.horse = horse.astype(np.uint8)

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image H x W x 3 uint8, mask H x W uint8 0/1)`` for ``index``."""
        rng = np.random.default_rng(seed_from_key(self.seed, "iseg-synthetic", index))
        s = self.size
        for _ in range(10):
            bg_i = int(rng.integers(len(self.photos)))
            bg = _random_crop(self.photos[bg_i], s, rng)
            if rng.random() < self.region_prob:
                m = _region_object(bg, rng)
                if m is not None:
                    return self._jitter(bg, rng), m
                continue
            fg_i = int(rng.integers(len(self.photos) - 1))
            fg = _random_crop(self.photos[fg_i + (fg_i >= bg_i)], s, rng).astype(np.float32)
            m = _random_shape(s, rng, self.horse)
            if m.sum() < 0.02 * s * s:
                continue
            fg = fg * rng.uniform(0.7, 1.3, 3) + rng.uniform(-25, 25, 3)  # colour jitter of the object
            alpha = cv2.GaussianBlur(m.astype(np.float32), (0, 0), float(rng.uniform(0.5, 1.2)))[..., None]
            img = alpha * fg + (1 - alpha) * bg.astype(np.float32)
            if rng.random() < 0.3:  # soft shadow beside the object
                sh = np.roll(alpha[..., 0], (int(rng.integers(2, 8)), int(rng.integers(2, 8))), (0, 1))
                sh = cv2.GaussianBlur(sh, (0, 0), 3.0)[..., None] * (1 - alpha)
                img = img * (1 - 0.35 * sh)
            return self._jitter(np.clip(img, 0, 255).astype(np.uint8), rng), m
        raise RuntimeError(f"could not synthesise sample {index} in 10 tries")  # practically unreachable

    @staticmethod
    def _jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = img.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
        return np.clip(out, 0, 255).astype(np.uint8)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, m = self.sample(index)
        return torch.from_numpy(img).permute(2, 0, 1).float() / 255.0, torch.from_numpy(m.astype(np.int64))


class CropSamples(Dataset):
    """Training crops from real instance samples (e.g. SBD): a random square around the object, resized.

    Returns ``(image 3 x size x size float32, mask size x size int64 0/1/255)``.
    """

    def __init__(self, samples: list[ISegSample], size: int = 160, seed: int = 0) -> None:
        if not samples:
            raise ValueError("no training samples")
        self.samples, self.size, self.seed = samples, size, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(seed_from_key(self.seed, "iseg-crop", index))
        s = self.samples[index]
        return object_crop(s.image, s.mask, self.size, rng)


def object_crop(
    image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random square around the object of ``mask`` (1.2-2x its box, jittered), resized to ``size``, flipped
    half the time: ``(3 x size x size float32 in [0, 1], size x size int64 0/1/255)``."""
    ys, xs = np.where(mask == 1)
    h, w = mask.shape
    side = int(min(max(np.ptp(ys), np.ptp(xs)) * rng.uniform(1.2, 2.0) + 8, min(h, w)))
    cy, cx = int(ys.mean()), int(xs.mean())
    y0 = int(np.clip(cy - side // 2 + rng.integers(-side // 8, side // 8 + 1), 0, h - side))
    x0 = int(np.clip(cx - side // 2 + rng.integers(-side // 8, side // 8 + 1), 0, w - side))
    img = cv2.resize(image[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_AREA)
    crop = cv2.resize(mask[y0 : y0 + side, x0 : x0 + side].astype(np.uint8), (size, size),
                      interpolation=cv2.INTER_NEAREST).astype(np.int64)  # fmt: skip
    if rng.random() < 0.5:
        img, crop = img[:, ::-1].copy(), crop[:, ::-1].copy()
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255.0, torch.from_numpy(crop)


#: Annotation files each COCO-format training set reads under ``<root>/annotations/``.
COCO_TRAIN_FILES = {
    "coco": ("instances_train2017.json",),
    "lvis": ("lvis_v1_train.json",),
    "coco_lvis": ("instances_train2017.json", "lvis_v1_train.json"),
}


class CocoInstances(Dataset):
    """Training crops from COCO-format instance annotations: COCO 2017, LVIS v1, or both (RITM's COCO+LVIS data).

    Layout (the public one): ``<root>/annotations/instances_train2017.json`` and/or ``lvis_v1_train.json``, images
    in ``<root>/train2017/`` (LVIS v1 reuses the COCO 2017 images; its entries name them by ``coco_url``). One
    sample per non-crowd instance of at least ``min_area`` pixels (RITM: 1000); images and masks are read lazily,
    so the annotation index is all that stays in memory. ``coco_lvis`` takes the union of both files' instances
    (RITM merges them into one de-duplicated mask set instead).
    """

    def __init__(
        self, root: str | Path, name: str = "coco_lvis", size: int = 160, seed: int = 0, min_area: float = 1000.0
    ) -> None:
        mask_utils = require_extra("pycocotools.mask", "app")

        if name not in COCO_TRAIN_FILES:
            raise ValueError(f"unknown COCO-format training set {name!r}; known: {', '.join(COCO_TRAIN_FILES)}")
        root = Path(root)
        files = [root / "annotations" / f for f in COCO_TRAIN_FILES[name]]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"--train-set {name} needs {', '.join(missing)} (the public COCO/LVIS layout)")
        self._mask_utils = mask_utils
        self.root, self.size, self.seed = root, size, seed
        self.images: dict[tuple[int, int], tuple[str, int, int]] = {}
        self.instances: list[tuple[int, int, object]] = []  # (file index, image id, segmentation)
        for fi, f in enumerate(files):
            data = json.loads(f.read_text())
            for im in data.get("images", []):
                rel = im.get("file_name") or "/".join(str(im.get("coco_url", "")).split("/")[-2:])
                if "/" not in rel:
                    rel = f"train2017/{rel}"
                self.images[(fi, im["id"])] = (rel, int(im["height"]), int(im["width"]))
            for ann in data.get("annotations", []):
                if ann.get("iscrowd", 0) or float(ann.get("area", 0)) < min_area or not ann.get("segmentation"):
                    continue
                if (fi, ann["image_id"]) in self.images:
                    self.instances.append((fi, ann["image_id"], ann["segmentation"]))
        if not self.instances:
            raise ValueError(f"no instance of at least {min_area:g} px in {', '.join(str(f) for f in files)}")

    def __len__(self) -> int:
        return len(self.instances)

    def mask(self, index: int) -> np.ndarray:
        """The ``index``-th instance's ``H x W`` int64 0/1 mask (polygons or RLE, decoded by pycocotools)."""
        fi, image_id, seg = self.instances[index]
        _, h, w = self.images[(fi, image_id)]
        mu = self._mask_utils
        if isinstance(seg, list):  # polygons
            rle = mu.merge(mu.frPyObjects(seg, h, w))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mu.frPyObjects(seg, h, w)
        else:
            rle = seg
        return mu.decode(rle).astype(np.int64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        fi, image_id, _ = self.instances[index]
        rel, h, w = self.images[(fi, image_id)]
        image = read_rgb(self.root / rel)
        if image.shape[:2] != (h, w):
            raise ValueError(f"{self.root / rel} is {image.shape[1]}x{image.shape[0]}, its annotation says {w}x{h}")
        mask = self.mask(index)
        if not (mask == 1).any():
            mask[h // 2, w // 2] = 1  # a degenerate polygon: keep the step's batch shape, the loss sees one pixel
        rng = np.random.default_rng(seed_from_key(self.seed, "iseg-coco", index))
        return object_crop(image, mask, self.size, rng)


# ------------------------------------------------------------------------- real training sets (DUTS, COCO JSON)

#: Where a DUTS-style folder keeps its images and masks (the first pair of folders found is used).
DUTS_LAYOUTS = (("DUTS-TR-Image", "DUTS-TR-Mask"), ("DUTS-TE-Image", "DUTS-TE-Mask"), ("images", "masks"))
#: DUTS-TR images held out for validation (a fixed seeded list, see :func:`duts_split`).
DUTS_VAL_SIZE = 500
DUTS_SPLIT_SEED = 0


def _duts_dirs(root: Path) -> tuple[Path, Path]:
    for image_dir, mask_dir in DUTS_LAYOUTS:
        if (root / image_dir).is_dir() and (root / mask_dir).is_dir():
            return root / image_dir, root / mask_dir
    if (root / "DUTS-TR").is_dir():
        return _duts_dirs(root / "DUTS-TR")
    layouts = ", ".join(f"{a}/ + {b}/" for a, b in DUTS_LAYOUTS)
    raise FileNotFoundError(f"{root} is not a DUTS-style folder (expected {layouts})")


class DutsFolder:
    """A DUTS-style salient-object folder: ``<image dir>/<stem>.jpg`` + ``<mask dir>/<stem>.png``.

    The mask is 8-bit grey, thresholded at 128 (>= 128 is the object, one object per image). The images and
    masks are read lazily: the name list is all that stays in memory.

    Args:
        root: the folder (``DUTS-TR-Image/`` + ``DUTS-TR-Mask/``, or ``images/`` + ``masks/``).
        names: only these stems (e.g. a split from :func:`duts_split`); all by default.

    Raises:
        FileNotFoundError: not a DUTS-style folder, no images, or an image without its mask.
    """

    def __init__(self, root: str | Path, names: list[str] | None = None) -> None:
        self.root = Path(root)
        image_dir, mask_dir = _duts_dirs(self.root)
        images, masks = _files(image_dir), _files(mask_dir)
        if not images:
            raise FileNotFoundError(f"no images in {image_dir}")
        missing = sorted(set(images) - set(masks))
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) in {image_dir} have no mask in {mask_dir}: {missing[:5]}")
        if names is not None:
            unknown = sorted(set(names) - set(images))
            if unknown:
                raise FileNotFoundError(f"{len(unknown)} name(s) are not in {image_dir}: {unknown[:5]}")
        self.names = sorted(images) if names is None else list(names)
        self._images, self._masks = images, masks

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image H x W x 3 uint8 RGB, mask H x W int64 0/1)`` of the ``index``-th pair.

        Raises:
            ValueError: the mask's size differs from the image's (or a file is unreadable).
        """
        name = self.names[index]
        image = read_rgb(self._images[name])
        raw = _read_gray(self._masks[name])
        if raw.ndim == 3:
            raw = raw[..., 0]
        if raw.shape != image.shape[:2]:
            raise ValueError(
                f"mask {self._masks[name]} is {raw.shape[1]}x{raw.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        return image, (raw >= 128).astype(np.int64)

    def sample(self, index: int) -> ISegSample:
        """Image ``index`` with its thresholded mask."""
        image, mask = self.load(index)
        return ISegSample(self.names[index], image, mask)


def duts_split(
    root: str | Path, val_size: int = DUTS_VAL_SIZE, seed: int = DUTS_SPLIT_SEED
) -> tuple[list[str], list[str]]:
    """The fixed train/validation split of a DUTS-style folder: ``(train names, val names)``, each sorted.

    The validation names are the first ``val_size`` of the sorted stems permuted by
    ``numpy.random.default_rng(seed)``; with the defaults on DUTS-TR (10,553 pairs) that is the 500-image
    validation set the benchmark reports. Training never reads them.
    """
    names = DutsFolder(root).names
    if not 0 <= val_size < len(names):
        raise ValueError(
            f"the validation split needs 0 <= val_size < {len(names)} (the folder's pairs), got {val_size}"
        )
    perm = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in perm[:val_size])
    held = set(val)
    return [n for n in names if n not in held], val


@ISEG_DATASETS.register("duts_val", layout="DUTS-TR-Image/ + DUTS-TR-Mask/ (the 500 held-out names)")
def load_duts_val(root: str | Path, limit: int | None = None, start: int = 0) -> list[ISegSample]:
    """The DUTS-TR validation split (:func:`duts_split`): ``limit`` names from the ``start``-th, in sorted order.

    Raises:
        ValueError: ``start`` is negative or past the split's end.
    """
    _, val = duts_split(root)
    if not 0 <= start < len(val):
        raise ValueError(f"start {start} is outside the {len(val)} DUTS-val names (0..{len(val) - 1})")
    folder = DutsFolder(root, val[start : None if limit is None else start + limit])
    return [folder.sample(i) for i in range(len(folder))]


class CocoAnnotations:
    """Instances of COCO-format JSON files, each with its own image folder (COCO, COCO subsets, LVIS...).

    One instance per non-crowd annotation of at least ``min_area`` pixels (RITM: 1,000): the annotation's
    ``area`` when given, else the decoded mask's. Polygons and RLE (compressed or not) are decoded by
    pycocotools. Images and masks are read lazily.

    Args:
        pairs: ``(annotation JSON, image folder)`` pairs; an image's ``file_name`` is looked up in its folder.
        min_area: smallest instance area in pixels.

    Raises:
        FileNotFoundError: a JSON or folder is missing.
        ValueError: a JSON is not COCO-format, or no instance is left.
    """

    def __init__(self, pairs: list[tuple[str | Path, str | Path]], min_area: float = 1000.0) -> None:
        from pycocotools import mask as mask_utils

        self._mask_utils = mask_utils
        self.images: dict[tuple[int, int], tuple[Path, int, int]] = {}
        self.instances: list[tuple[int, int, object]] = []
        self.dropped = {"crowd": 0, "small": 0}
        if not pairs:
            raise ValueError("no COCO annotation file given")
        for fi, (ann_file, image_dir) in enumerate(pairs):
            ann_file, image_dir = Path(ann_file), Path(image_dir)
            if not ann_file.is_file():
                raise FileNotFoundError(f"annotation file {ann_file} does not exist")
            if not image_dir.is_dir():
                raise FileNotFoundError(f"image folder {image_dir} does not exist")
            try:
                data = json.loads(ann_file.read_text())
                images, annotations = data["images"], data["annotations"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{ann_file} is not a COCO-format instance file: {err}") from None
            for im in images:
                self.images[(fi, im["id"])] = (
                    image_dir / Path(im["file_name"]).name,
                    int(im["height"]),
                    int(im["width"]),
                )
            for ann in annotations:
                if (fi, ann["image_id"]) not in self.images or not ann.get("segmentation"):
                    continue
                if ann.get("iscrowd", 0):
                    self.dropped["crowd"] += 1
                    continue
                seg = ann["segmentation"]
                area = float(ann["area"]) if "area" in ann else float(self._decode(fi, ann["image_id"], seg).sum())
                if area < min_area:
                    self.dropped["small"] += 1
                    continue
                self.instances.append((fi, ann["image_id"], seg))
        if not self.instances:
            files = ", ".join(str(a) for a, _ in pairs)
            raise ValueError(f"no non-crowd instance of at least {min_area:g} px in {files}")

    def __len__(self) -> int:
        return len(self.instances)

    def _decode(self, fi: int, image_id: int, seg: object) -> np.ndarray:
        _, h, w = self.images[(fi, image_id)]
        mu = self._mask_utils
        if isinstance(seg, list):  # polygons
            rle = mu.merge(mu.frPyObjects(seg, h, w))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mu.frPyObjects(seg, h, w)
        elif isinstance(seg, dict):
            rle = dict(seg)
            if isinstance(rle.get("counts"), str):
                rle["counts"] = rle["counts"].encode()
        else:
            raise ValueError(f"image {image_id}: a segmentation is neither polygons nor RLE")
        if isinstance(seg, dict) and list(seg.get("size", [h, w])) != [h, w]:
            raise ValueError(f"image {image_id}: an RLE mask of size {seg['size']} on an image of {h}x{w}")
        return mu.decode(rle).astype(np.int64)

    def mask(self, index: int) -> np.ndarray:
        """The ``index``-th instance's ``H x W`` int64 0/1 mask."""
        fi, image_id, seg = self.instances[index]
        return self._decode(fi, image_id, seg)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image H x W x 3 uint8 RGB, mask H x W int64 0/1)`` of the ``index``-th instance.

        Raises:
            ValueError: the image file's size differs from the annotation's (or it is unreadable).
        """
        fi, image_id, _ = self.instances[index]
        path, h, w = self.images[(fi, image_id)]
        image = read_rgb(path)
        if image.shape[:2] != (h, w):
            raise ValueError(f"{path} is {image.shape[1]}x{image.shape[0]}, its annotation says {w}x{h}")
        return image, self.mask(index)


def augmented_crop(
    image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """RITM-style training sample: a random square crop around the object (its box times 1.1-2.5, jittered, so
    the object's scale varies as RITM's 0.75-1.4 resize does), resized to ``size``, flipped half the time, with
    brightness/contrast and RGB-shift colour jitter.

    Returns:
        ``(3 x size x size float32 in [0, 1], size x size int64 0/1/255)``.
    """
    ys, xs = np.where(mask == 1)
    h, w = mask.shape
    extent = max(np.ptp(ys), np.ptp(xs)) + 1 if len(ys) else min(h, w)
    side = int(np.clip(extent * rng.uniform(1.1, 2.5), 32, min(h, w)))
    cy, cx = (int(ys.mean()), int(xs.mean())) if len(ys) else (h // 2, w // 2)
    y0 = int(np.clip(cy - side // 2 + rng.integers(-side // 6, side // 6 + 1), 0, h - side))
    x0 = int(np.clip(cx - side // 2 + rng.integers(-side // 6, side // 6 + 1), 0, w - side))
    img = cv2.resize(image[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_AREA)
    crop = cv2.resize(mask[y0 : y0 + side, x0 : x0 + side].astype(np.uint8), (size, size),
                      interpolation=cv2.INTER_NEAREST).astype(np.int64)  # fmt: skip
    if rng.random() < 0.5:
        img, crop = img[:, ::-1], crop[:, ::-1]
    out = img.astype(np.float32)
    out = (out - out.mean()) * rng.uniform(0.75, 1.25) + out.mean() + rng.uniform(-25, 25)  # contrast, brightness
    out = out + rng.uniform(-10, 10, 3)  # RGB shift
    out = np.clip(out, 0, 255) / 255.0
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)), torch.from_numpy(
        np.ascontiguousarray(crop)
    )


def parse_mix(text: str, known: tuple[str, ...] = ("duts", "coco")) -> dict[str, float]:
    """``"duts:0.6,coco:0.4"`` (or ``"duts"``) -> ``{"duts": 0.6, "coco": 0.4}``, weights normalised to sum 1.

    Raises:
        ValueError: an unknown source (with a close-name hint), a repeated one, or a weight that is not > 0.
    """
    import difflib

    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition(":")
        name = name.strip()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown training source {name!r} in {text!r}{hint}; known: {', '.join(known)}")
        if name in mix:
            raise ValueError(f"training source {name!r} appears twice in {text!r}")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"the weight of {name!r} in {text!r} is not a number") from None
        if not w > 0 or not np.isfinite(w):
            raise ValueError(f"the weight of {name!r} in {text!r} must be > 0, got {weight}")
        mix[name] = w
    total = sum(mix.values())
    return {k: v / total for k, v in mix.items()}


class MixedObjects(Dataset):
    """Training samples drawn from several real sources by weight, RITM-style (:func:`augmented_crop`).

    Sample ``i`` is a pure function of ``(seed, i)``: its generator picks the source by weight, an instance
    uniformly within it, and the crop. An instance whose object is under ``min_pixels`` (an empty DUTS mask) is
    replaced by another draw.

    Args:
        sources: ``name -> (reader with len() and load(index), weight)``.
        length: samples per epoch.
        size: square crop side.
        seed: base seed.
    """

    def __init__(
        self, sources: dict[str, tuple[object, float]], length: int, size: int, seed: int = 0, min_pixels: int = 100
    ) -> None:
        if not sources:
            raise ValueError("no training source")
        self.names = list(sources)
        self.readers = [sources[n][0] for n in self.names]
        w = np.array([sources[n][1] for n in self.names], dtype=np.float64)
        self.weights = w / w.sum()
        self.length, self.size, self.seed, self.min_pixels = length, size, seed, min_pixels

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(seed_from_key(self.seed, "iseg-mix", index))
        for _ in range(10):
            reader = self.readers[int(rng.choice(len(self.readers), p=self.weights))]
            image, mask = reader.load(int(rng.integers(len(reader))))
            if int((mask == 1).sum()) >= self.min_pixels:
                break
        return augmented_crop(image, mask, self.size, rng)

    def describe(self) -> str:
        """One line naming each source with its instance count and weight."""
        parts = [
            f"{n} ({len(r)} instances, weight {w:.2f})"
            for n, r, w in zip(self.names, self.readers, self.weights, strict=True)
        ]
        return f"MixedObjects: {self.length} samples/epoch from " + ", ".join(parts)
