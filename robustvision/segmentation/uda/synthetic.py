"""The generated UDA benchmark: synthetic street scenes in a game-like source style and a photo-like target style.

Each scene is a random street layout (sky, buildings, trees, sidewalks, a road towards a vanishing point, poles
with traffic signs, cars, pedestrians) labelled with 9 of the 19 Cityscapes train ids. The layout distribution
is the same in both domains; only the appearance differs:

- **source** (GTA5's role): flat per-class colours with small per-instance jitter and sharp, aliased edges;
- **target** (Cityscapes' role): surfaces textured with real photographs that scikit-image ships (``brick``,
  ``grass``, ``gravel``, ``coffee``, ``rocket``, ...) and, when present, the street photos in
  ``../shared/data/backgrounds``; other class colours; then a camera model: lighting (gamma, exposure), a colour
  cast, Gaussian blur and sensor noise.

Source images are labelled for training; target images are unlabelled for training, and a separate labelled
target split is used only for evaluation. Everything is seeded: the same seed gives the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageFilter

from robustvision.runtime import seed_from_key, shared_data_dir
from robustvision.segmentation.uda.data import IMAGE_EXTENSIONS, TensorSegmentation
from robustvision.segmentation.uda.labels import CLASS_NAMES, IGNORE_INDEX

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR = (
    CLASS_NAMES.index(n)
    for n in ("road", "sidewalk", "building", "pole", "traffic sign", "vegetation", "sky", "person", "car")
)
BENCHMARK_CLASSES: tuple[int, ...] = (ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR)

# Source (game-like) base colours, RGB 0..255, one literal per class.
SOURCE_COLOURS: dict[int, tuple[int, int, int]] = {
    ROAD: (80, 80, 88), SIDEWALK: (170, 160, 150), BUILDING: (150, 110, 80), POLE: (120, 120, 120),
    SIGN: (230, 200, 20), VEGETATION: (60, 150, 50), SKY: (120, 180, 240), PERSON: (200, 60, 60),
    CAR: (40, 70, 190),
}  # fmt: skip
# Target base tints (multiplied into the photo textures); deliberately not the source colours.
TARGET_TINTS: dict[int, tuple[int, int, int]] = {
    ROAD: (120, 115, 110), SIDEWALK: (190, 185, 170), BUILDING: (175, 165, 150), POLE: (95, 95, 100),
    SIGN: (60, 110, 200), VEGETATION: (95, 120, 45), SKY: (215, 220, 225), PERSON: (70, 60, 80),
    CAR: (150, 150, 155),
}  # fmt: skip


@dataclass
class SceneLayout:
    """Label map plus instance ids (for per-instance colours) of one scene."""

    labels: np.ndarray  # H x W train ids
    instances: np.ndarray  # H x W instance ids (0 = stuff)


def _ellipse(yy, xx, cy, cx, ry, rx):
    return ((yy - cy) / max(ry, 1e-3)) ** 2 + ((xx - cx) / max(rx, 1e-3)) ** 2 <= 1.0


def _rect(yy, xx, y0, y1, x0, x1):
    return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)


def sample_layout(rng: np.random.Generator, h: int, w: int) -> SceneLayout:
    """Draw a random street layout at ``h x w`` (pixel coordinates, painter's order)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lab = np.full((h, w), SKY, dtype=np.int64)
    inst = np.zeros((h, w), dtype=np.int64)
    next_id = [1]

    def paint(mask, cls, instance=False):
        lab[mask] = cls
        if instance:
            inst[mask] = next_id[0]
            next_id[0] += 1
        else:
            inst[mask] = 0

    hor = rng.uniform(0.38, 0.52) * h
    # Buildings: a row of blocks with gaps showing sky.
    x = rng.uniform(-0.1, 0.05) * w
    while x < w:
        bw = rng.uniform(0.12, 0.35) * w
        if rng.random() < 0.85:
            top = hor - rng.uniform(0.12, 0.38) * h
            paint(_rect(yy, xx, top, hor + 0.04 * h, x, x + bw), BUILDING, instance=True)
        x += bw + (rng.uniform(0.0, 0.08) * w if rng.random() < 0.5 else 0.0)
    # Trees: canopies above the horizon line.
    for _ in range(rng.integers(1, 5)):
        cx, r = rng.uniform(0, w), rng.uniform(0.06, 0.16) * h
        paint(_ellipse(yy, xx, hor - rng.uniform(0.02, 0.15) * h, cx, r, r * rng.uniform(1.0, 1.8)), VEGETATION)
    # Ground: sidewalk everywhere below the horizon, then the road towards a vanishing point.
    paint(yy >= hor, SIDEWALK)
    vx = rng.uniform(0.35, 0.65) * w
    left, right = vx - rng.uniform(0.55, 1.0) * w, vx + rng.uniform(0.55, 1.0) * w
    t = np.clip((yy - hor) / max(h - hor, 1.0), 0.0, 1.0)
    road = (yy >= hor + 1) & (xx >= vx + (left - vx) * t) & (xx <= vx + (right - vx) * t)
    paint(road, ROAD)
    # Hedges along the sidewalk edge.
    if rng.random() < 0.5:
        side = rng.integers(0, 2)
        y0 = hor + 0.02 * h
        x0, x1 = (0, vx + (left - vx) * 0.3) if side == 0 else (vx + (right - vx) * 0.3, w)
        paint(_rect(yy, xx, y0 - 0.06 * h, y0 + 0.03 * h, x0, x1) & (lab != ROAD), VEGETATION)
    # Objects sorted by depth (far first).
    objects = []
    for _ in range(rng.integers(1, 5)):
        objects.append(("car", rng.uniform(hor + 0.08 * h, h * 1.05)))
    for _ in range(rng.integers(0, 4)):
        objects.append(("person", rng.uniform(hor + 0.06 * h, h * 1.02)))
    for _ in range(rng.integers(1, 4)):
        objects.append(("pole", rng.uniform(hor + 0.04 * h, h * 0.98)))
    for kind, base in sorted(objects, key=lambda o: o[1]):
        s = (base - hor) / max(h - hor, 1.0)  # perspective scale, 0 at the horizon
        tb = np.clip((base - hor) / max(h - hor, 1.0), 0.0, 1.0)
        rl, rr = vx + (left - vx) * tb, vx + (right - vx) * tb
        if kind == "car":
            cw, ch = (0.22 + 0.35 * s) * w * 0.6, (0.10 + 0.25 * s) * h
            cx = rng.uniform(rl + cw / 2, max(rl + cw / 2 + 1, rr - cw / 2))
            body = _rect(yy, xx, base - ch * 0.6, base, cx - cw / 2, cx + cw / 2)
            roof = _rect(yy, xx, base - ch, base - ch * 0.55, cx - cw * 0.32, cx + cw * 0.3)
            paint(body | roof, CAR, instance=True)
        elif kind == "person":
            ph = (0.12 + 0.35 * s) * h
            on_left = rng.random() < 0.5
            cx = rng.uniform(0, max(1.0, rl)) if on_left else rng.uniform(min(w - 1.0, rr), w)
            body = _ellipse(yy, xx, base - ph * 0.4, cx, ph * 0.4, ph * 0.13)
            head = _ellipse(yy, xx, base - ph * 0.88, cx, ph * 0.11, ph * 0.09)
            paint(body | head, PERSON, instance=True)
        else:
            ph = (0.3 + 0.6 * s) * h
            on_left = rng.random() < 0.5
            cx = rng.uniform(0, max(1.0, rl - 2)) if on_left else rng.uniform(min(w - 1.0, rr + 2), w)
            pw = max(1.0, (0.008 + 0.012 * s) * w)
            paint(_rect(yy, xx, base - ph, base, cx - pw / 2, cx + pw / 2), POLE)
            if rng.random() < 0.7:
                sr = (0.04 + 0.06 * s) * h
                sign = (
                    _rect(yy, xx, base - ph - sr, base - ph + sr, cx - sr, cx + sr)
                    if rng.random() < 0.5
                    else _ellipse(yy, xx, base - ph, cx, sr, sr)
                )
                paint(sign, SIGN, instance=True)
    return SceneLayout(lab, inst)


@lru_cache(maxsize=1)
def _photo_pool() -> tuple[dict[str, np.ndarray], tuple[np.ndarray, ...]]:
    """Real-photo textures (grey, 256x256, in [0, 1]) and colour photo crops for buildings."""
    import skimage.data as skd

    def grey(a):
        a = a.astype(np.float32)
        a = a.mean(-1) if a.ndim == 3 else a
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6)
        return np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((256, 256), Image.BILINEAR)) / 255.0

    textures = {"brick": grey(skd.brick()), "grass": grey(skd.grass()), "gravel": grey(skd.gravel())}
    photos = [skd.coffee(), skd.rocket(), skd.chelsea(), skd.astronaut()]
    root = shared_data_dir()
    if root is not None and (root / "backgrounds").is_dir():
        for p in sorted((root / "backgrounds").iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                with Image.open(p) as im:
                    photos.append(np.asarray(im.convert("RGB")))
    pool = tuple(
        np.asarray(Image.fromarray(p[..., :3]).resize((256, 192), Image.BILINEAR), dtype=np.float32) / 255.0
        for p in photos
    )
    return textures, pool


def _crop(rng: np.random.Generator, tex: np.ndarray, h: int, w: int, scale: float) -> np.ndarray:
    """A random crop of ``tex`` resampled to ``h x w`` (``scale``: texture pixels per output pixel)."""
    th, tw = tex.shape[:2]
    ch, cw = min(th, max(2, int(h * scale))), min(tw, max(2, int(w * scale)))
    y0, x0 = rng.integers(0, th - ch + 1), rng.integers(0, tw - cw + 1)
    patch = tex[y0 : y0 + ch, x0 : x0 + cw]
    ys = (np.arange(h) * ch / h).astype(int)
    xs = (np.arange(w) * cw / w).astype(int)
    return patch[ys][:, xs]


def render_source(rng: np.random.Generator, layout: SceneLayout) -> np.ndarray:
    """Flat, game-like colours with per-instance jitter and sharp edges: ``H x W x 3`` in [0, 1]."""
    lab, inst = layout.labels, layout.instances
    img = np.zeros((*lab.shape, 3), dtype=np.float32)
    for cls, colour in SOURCE_COLOURS.items():
        img[lab == cls] = np.asarray(colour, np.float32) / 255.0
    for i in np.unique(inst[inst > 0]):
        m = inst == i
        img[m] = np.clip(img[m] + rng.uniform(-0.12, 0.12, size=3).astype(np.float32), 0, 1)
    # Building windows: a flat darker grid, as a game engine would draw them.
    yy, xx = np.mgrid[0 : lab.shape[0], 0 : lab.shape[1]]
    win = (lab == BUILDING) & (yy % 6 < 2) & (xx % 7 < 3)
    img[win] *= 0.6
    return img


def render_target(rng: np.random.Generator, layout: SceneLayout) -> np.ndarray:
    """Photo textures, other colours, then lighting, colour cast, blur and noise: ``H x W x 3`` in [0, 1]."""
    textures, photos = _photo_pool()
    lab, inst = layout.labels, layout.instances
    h, w = lab.shape
    img = np.zeros((h, w, 3), dtype=np.float32)
    tint = {c: np.asarray(v, np.float32) / 255.0 for c, v in TARGET_TINTS.items()}
    texture_of = {ROAD: "gravel", SIDEWALK: "brick", VEGETATION: "grass", POLE: "gravel", CAR: "gravel",
                  PERSON: "grass", SIGN: "brick"}  # fmt: skip
    for cls in BENCHMARK_CLASSES:
        m = lab == cls
        if not m.any():
            continue
        if cls == SKY:
            grad = np.linspace(0.85, 1.05, h, dtype=np.float32)[:, None, None]
            clouds = _crop(rng, textures["grass"], h, w, 3.0)[..., None]
            layer = np.clip(tint[SKY] * grad + 0.15 * (clouds - 0.5), 0, 1) * np.ones((h, w, 3), np.float32)
        elif cls == BUILDING:
            photo = _crop(rng, photos[rng.integers(len(photos))], h, w, 1.5)
            grey = photo.mean(-1, keepdims=True)
            layer = 0.5 * (0.6 * photo + 0.4 * grey) + 0.5 * tint[BUILDING] * (0.5 + grey)
        else:
            t = _crop(rng, textures[texture_of[cls]], h, w, rng.uniform(1.0, 3.0))[..., None]
            strength = 0.8 if cls in (ROAD, SIDEWALK, VEGETATION) else 0.4
            layer = tint[cls] * (1.0 - strength / 2 + strength * t)
        img[m] = np.clip(layer, 0, 1)[m]
    for i in np.unique(inst[inst > 0]):
        m = inst == i
        cls = int(lab[m][0])
        if cls in (CAR, PERSON):  # paint and clothing vary a lot between instances
            img[m] = np.clip(img[m] * rng.uniform(0.45, 1.6, size=3).astype(np.float32), 0, 1)
        else:
            img[m] = np.clip(img[m] * rng.uniform(0.8, 1.2), 0, 1)
    # Camera: exposure and gamma, colour cast, vignetting, blur, noise.
    img = np.clip(img * rng.uniform(0.7, 1.2), 0, 1) ** rng.uniform(0.7, 1.5)
    img = img * rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vign = 1.0 - 0.25 * (((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2) * 2
    img = np.clip(img * vign[..., None], 0, 1)
    pil = Image.fromarray((img * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    img = np.asarray(pil, dtype=np.float32) / 255.0
    img = img + rng.normal(0.0, rng.uniform(0.01, 0.05), size=img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def generate_streets(
    domain: str, n: int, image_size: tuple[int, int] = (64, 128), seed: int = 0, split: str = "train"
) -> TensorSegmentation:
    """Generate ``n`` labelled street scenes in the ``source`` or ``target`` style.

    Args:
        domain: ``source`` (flat colours) or ``target`` (photo textures and camera effects).
        n: number of scenes.
        image_size: ``(H, W)``.
        seed: base seed; each image's layout and appearance come from ``(seed, domain, split, index)``.
        split: a name mixed into the seed so that ``train`` and ``val`` scenes differ.

    Returns:
        A :class:`TensorSegmentation` with 19-class train-id masks (9 classes occur).

    Example:
        >>> data = generate_streets("source", 2, (32, 64), seed=0)
        >>> tuple(data.images.shape), data.masks.unique().tolist()[:3]
        ((2, 3, 32, 64), [0, 1, 2])
    """
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    h, w = image_size
    images = np.zeros((n, 3, h, w), dtype=np.float32)
    masks = np.full((n, h, w), IGNORE_INDEX, dtype=np.int64)
    render = render_source if domain == "source" else render_target
    for i in range(n):
        rng = np.random.default_rng(seed_from_key(seed, "uda-streets", domain, split, i))
        layout = sample_layout(rng, h, w)
        images[i] = render(rng, layout).transpose(2, 0, 1)
        masks[i] = layout.labels
    return TensorSegmentation(torch.from_numpy(images), torch.from_numpy(masks), name=f"streets-{domain}-{split}")
