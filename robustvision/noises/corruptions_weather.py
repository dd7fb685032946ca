"""ImageNet-C weather corruptions: snow, frost, fog, brightness, plus spatter (an "extra").

Constants: ``imagenet`` rows from ``make_imagenet_c.py``, ``cifar`` rows from ``make_cifar_c.py``
(Hendrycks & Dietterich, ICLR 2019).

Frost: the original blends a random crop of one of five frost photographs shipped with the generator.
We ship no photographs; :func:`frost_texture` synthesises one instead: a power-law (``1/f^1.7``) noise field
plus a ridged copy of it (thin bright crystal veins), scaled to the per-channel mean and standard deviation
of one of the five photographs (measured once from imagecorruptions' ``frost1-5``, the constants below).
As the original reads its five photographs and crops one at random, we synthesise a fixed, seeded bank of
five such textures once per image size and device (:func:`frost_bank`, 1.5x the image side) and take random
crops of it. The blend formula is the original one, and ``apply`` accepts a real texture in
``params['texture']``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import cv2
import numpy as np
import torch

from robustvision.noises.corruption_ops import (
    Corruption,
    Profile,
    as_rgb,
    clipped_zoom,
    gaussian_filter,
    motion_blur_batch,
    next_power_of_2,
    plasma_draw_shapes,
    plasma_fractal,
    rand,
    randn,
    register_corruption,
    rgb_to_gray,
)

# Per-channel (R, G, B) mean and std of imagecorruptions' frost1.png ... frost5.jpg (the five the original uses).
FROST_PHOTO_STATS = (
    ((0.305, 0.585, 0.650), (0.106, 0.065, 0.060)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.540, 0.599, 0.648), (0.112, 0.112, 0.117)),
    ((0.441, 0.484, 0.528), (0.174, 0.170, 0.163)),
)
FROST_SPECTRAL_SLOPE = 1.7  # radial power spectrum of the photos falls as f^-1.7 (measured: 1.3-1.9)


@register_corruption("snow", "weather")
class Snow(Corruption):
    """Falling snow: a thresholded, zoomed noise layer motion-blurred at an angle in [-135, -45), added twice
    (and rotated 180 degrees), over an image brightened towards ``1.5 * grey + 0.5``.
    """

    table = {
        # (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
        "imagenet": (
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ),
        "cifar": (
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        n, _, h, w = shape
        return {"flakes": randn((n, 1, h, w), generator), "angle": -135 + 90 * rand((n,), generator, torch.float64)}

    def apply(self, images, params, labels=None, model=None):
        mean, std, zoom, threshold, radius, sigma, weight = self.constants(images.shape)
        layer = params["flakes"].to(images).mul(std).add_(mean)
        layer = clipped_zoom(layer, zoom)
        layer = layer.masked_fill_(layer < threshold, 0).clamp_(0, 1)
        layer = motion_blur_batch(layer, radius, sigma, params["angle"])
        layer = layer.mul_(255).round_().div_(255)
        layer = layer.add_(torch.rot90(layer, 2, (-2, -1)))  # both snow layers, one channel
        # weight * x + (1 - weight) * max(x, 1.5 * grey + 0.5), grey = cv2's RGB2GRAY
        if images.shape[1] == 3:
            grey = torch.mul(images[:, 0:1], 0.299 * 1.5)
            grey.add_(images[:, 1:2], alpha=0.587 * 1.5).add_(images[:, 2:3], alpha=0.114 * 1.5).add_(0.5)
        else:
            grey = images.mul(1.5).add_(0.5)
        out = torch.maximum(images, grey).mul_(1 - weight).add_(images, alpha=weight)
        return out.add_(layer).clamp_(0, 1)


def frost_texture(
    n: int, h: int, w: int, *, generator: torch.Generator | None = None, photo: torch.Tensor | None = None
) -> torch.Tensor:
    """``n`` synthetic RGB frost textures, ``n x 3 x h x w`` in [0, 1] (see the module docstring).

    ``photo`` (``n`` indices into ``FROST_PHOTO_STATS``) picks whose colour statistics each texture takes;
    random when omitted.
    """
    size = max(next_power_of_2(max(h, w, 2)), 8)
    dev = generator.device if generator is not None else torch.device("cpu")
    white = torch.randn((n, size, size), generator=generator, device=dev)
    if photo is None:
        photo = torch.randint(0, len(FROST_PHOTO_STATS), (n,), generator=generator, device=dev)
    choice = photo.to(dev)
    fy = torch.fft.fftfreq(size, device=dev).view(-1, 1)
    fx = torch.fft.rfftfreq(size, device=dev).view(1, -1)
    radius = torch.sqrt(fy**2 + fx**2).clamp_min(1.0 / size)
    field = torch.fft.irfft2(torch.fft.rfft2(white) * radius ** (-FROST_SPECTRAL_SLOPE / 2), s=(size, size))
    field = field[:, :h, :w]
    field = (field - field.mean((1, 2), keepdim=True)) / field.std((1, 2), keepdim=True).clamp_min(1e-8)
    veins = (1 - field.abs().clamp(max=3) / 3) ** 4  # bright thin ridges where the field crosses zero
    veins = (veins - veins.mean((1, 2), keepdim=True)) / veins.std((1, 2), keepdim=True).clamp_min(1e-8)
    gray = (0.6 * field + 0.8 * veins) / 1.0
    means = torch.tensor([s[0] for s in FROST_PHOTO_STATS], device=dev)[choice].view(n, 3, 1, 1)
    stds = torch.tensor([s[1] for s in FROST_PHOTO_STATS], device=dev)[choice].view(n, 3, 1, 1)
    return (means + stds * gray.unsqueeze(1)).clamp(0, 1)


FROST_BANK_SEED = 20190101  # the bank is fixed, like the photographs the original ships
FROST_BANK_SCALE = 1.5  # bank side / image side: room for random crops (the original's photos are >= 1.1x)


def frost_bank_size(h: int, w: int) -> tuple[int, int]:
    """Height and width of the frost textures that ``h x w`` images are cropped from."""
    return int(math.ceil(h * FROST_BANK_SCALE)), int(math.ceil(w * FROST_BANK_SCALE))


@functools.lru_cache(maxsize=8)
def frost_bank(h: int, w: int, device: str = "cpu") -> torch.Tensor:
    """The fixed bank of frost textures for ``h x w`` images: one per photograph of the original,
    ``5 x 3 x H' x W'`` (see :func:`frost_bank_size`), generated once (seeded, on the CPU) and cached per size and
    device, as the original reads its five photographs. Read-only: crops are copied, never written to.
    """
    bh, bw = frost_bank_size(h, w)
    k = len(FROST_PHOTO_STATS)
    bank = frost_texture(k, bh, bw, generator=torch.Generator().manual_seed(FROST_BANK_SEED), photo=torch.arange(k))
    return bank.to(device)


@register_corruption("frost", "weather")
class Frost(Corruption):
    """Frost on the lens: ``clip(a * x + b * frost)``, ``frost`` a random crop of one of five fixed textures.

    As the original picks one of its five frost photographs and crops it at a random position,
    ``sample_params`` draws the texture (``photo``) and the crop's ``top``/``left`` corner in the fixed bank of
    :func:`frost_bank`. ``params['texture']`` (``N x 3 x H x W``) may be given instead, e.g. a real photo crop.
    """

    table = {
        # (image weight, frost weight)
        "imagenet": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
        "cifar": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        n, _, h, w = shape
        bh, bw = frost_bank_size(h, w)
        dev = generator.device if generator is not None else torch.device("cpu")
        photo = torch.randint(0, len(FROST_PHOTO_STATS), (n,), generator=generator, device=dev)
        top = torch.randint(0, bh - h + 1, (n,), generator=generator, device=dev)
        left = torch.randint(0, bw - w + 1, (n,), generator=generator, device=dev)
        return {"photo": photo, "top": top, "left": left}

    def apply(self, images, params, labels=None, model=None):
        a, b = self.constants(images.shape)
        n, c, h, w = images.shape
        out = images * a
        if "texture" in params:
            texture = params["texture"].to(images)
            out.add_(rgb_to_gray(texture) if c == 1 else texture, alpha=b)
            return out.clamp_(0, 1)
        bank = frost_bank(h, w, str(images.device)).to(images.dtype)
        photos, tops, lefts = (params[k].tolist() for k in ("photo", "top", "left"))
        for i, (k, t, l0) in enumerate(zip(photos, tops, lefts, strict=True)):
            crop = bank[k, :, t : t + h, l0 : l0 + w]
            out[i].add_(rgb_to_gray(crop[None])[0] if c == 1 else crop, alpha=b)
        return out.clamp_(0, 1)


@register_corruption("fog", "weather")
class Fog(Corruption):
    """Fog: a diamond-square plasma fractal added with weight ``c[0]`` (roughness ``c[1]``), rescaled so the
    brightest input value keeps its level, ``clip((x + a * plasma) * max(x) / (max(x) + a))``.
    """

    table = {
        # (plasma weight, wibble decay)
        "imagenet": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
        "cifar": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        n, _, h, w = shape
        mapsize = next_power_of_2(max(h, w, 2))
        return {"plasma_draws": [rand((n, *s), generator) for s in plasma_draw_shapes(mapsize)]}

    def apply(self, images, params, labels=None, model=None):
        a, decay = self.constants(images.shape)
        n, _, h, w = images.shape
        if "plasma" in params:
            plasma = params["plasma"]
        else:
            plasma = plasma_fractal(params["plasma_draws"], next_power_of_2(max(h, w, 2)), decay)
        plasma = plasma[:, :h, :w].to(images).unsqueeze(1)
        max_val = images.amax((1, 2, 3), keepdim=True)
        return torch.add(images, plasma, alpha=a).mul_(max_val / (max_val + a)).clamp_(0, 1)


@register_corruption("brightness", "weather")
class Brightness(Corruption):
    """Brightness: add ``c`` to the HSV value channel (to the grey level for one-channel images)."""

    table = {
        "imagenet": (0.1, 0.2, 0.3, 0.4, 0.5),
        "cifar": (0.05, 0.1, 0.15, 0.2, 0.3),
    }

    def apply(self, images, params, labels=None, model=None):
        c = self.constants(images.shape)
        if images.shape[1] != 3:
            return (images + c).clamp(0, 1)
        # With hue and saturation fixed, HSV -> RGB is linear in the value: scale RGB by v' / v (black -> grey).
        v = images.amax(1, keepdim=True)
        v_new = (v + c).clamp(0, 1)
        scaled = images * (v_new / torch.where(v > 0, v, torch.ones_like(v)))
        return torch.where(v > 0, scaled, v_new.expand_as(images)).clamp(0, 1)


@register_corruption("spatter", "extra")
class Spatter(Corruption):
    """Water (severities 1-3) or mud (4-5) splashes from a blurred, thresholded Gaussian liquid layer.

    The water branch's edge map (Canny, distance transform, histogram equalisation, emboss) is an OpenCV
    uint8 pipeline; it runs per image on the CPU, the rest in torch.
    """

    table = {
        # (mean, std, blur sigma, threshold, intensity or mud blur sigma, 0 = water / 1 = mud)
        "imagenet": (
            (0.65, 0.3, 4, 0.69, 0.6, 0),
            (0.65, 0.3, 3, 0.68, 0.6, 0),
            (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1),
            (0.67, 0.4, 1, 0.65, 1.5, 1),
        ),
        "cifar": (
            (0.62, 0.1, 0.7, 0.7, 0.5, 0),
            (0.65, 0.1, 0.8, 0.7, 0.5, 0),
            (0.65, 0.3, 1, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1),
            (0.65, 0.1, 0.5, 0.68, 0.6, 1),
        ),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        n, _, h, w = shape
        return {"liquid": randn((n, 1, h, w), generator)}

    def apply(self, images, params, labels=None, model=None):
        mean, std, sigma, threshold, strength, mud = self.constants(images.shape)
        x, grey = as_rgb(images)
        # the layer is filtered in float64, as the original: thresholds then cut it
        liquid = params["liquid"].to(device=images.device, dtype=torch.float64).mul_(std).add_(mean)
        liquid = gaussian_filter(liquid, sigma)
        liquid = liquid.masked_fill_(liquid < threshold, 0)
        if mud:
            m = gaussian_filter((liquid > threshold).float(), strength)
            m = m.masked_fill_(m < 0.8, 0).to(x)
            color = torch.tensor([63, 42, 20], device=x.device, dtype=x.dtype).view(1, 3, 1, 1) / 255
            out = torch.lerp(x, color.expand_as(x), m)  # x * (1 - m) + color * m
        else:
            m = torch.stack([_water_mask(layer[0]) for layer in liquid.cpu().numpy()]).to(x.device, x.dtype)
            color = torch.tensor([175, 238, 238], device=x.device, dtype=x.dtype).view(1, 3, 1, 1) * (strength / 255)
            out = torch.addcmul(x, m.unsqueeze(1), color)
        out = out.clamp_(0, 1)
        return rgb_to_gray(out) if grey else out


def _water_mask(liquid: np.ndarray) -> torch.Tensor:
    """The original's water-drop mask (liquid * embossed edge distance, normalised to max 1) for one layer."""
    layer = (np.clip(liquid, 0, 1) * 255).astype(np.uint8)  # the original casts without clipping
    dist = 255 - cv2.Canny(layer, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    dist = cv2.filter2D(dist, cv2.CV_8U, ker)
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    m = layer * dist
    peak = float(m.max())
    return torch.from_numpy(m / peak if peak > 0 else m)


def snow(
    x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None, profile: Profile = "auto"
) -> torch.Tensor:
    """ImageNet-C snow. ``x``: ``N x C x H x W`` in [0, 1]."""
    return Snow(severity, profile=profile)(x, generator=generator)


def frost(
    x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None, profile: Profile = "auto"
) -> torch.Tensor:
    """ImageNet-C frost with a synthetic frost texture. ``x``: ``N x C x H x W`` in [0, 1]."""
    return Frost(severity, profile=profile)(x, generator=generator)


def fog(
    x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None, profile: Profile = "auto"
) -> torch.Tensor:
    """ImageNet-C fog (plasma fractal). ``x``: ``N x C x H x W`` in [0, 1]."""
    return Fog(severity, profile=profile)(x, generator=generator)


def brightness(x: torch.Tensor, severity: int = 1, *, profile: Profile = "auto") -> torch.Tensor:
    """ImageNet-C brightness (deterministic). ``x``: ``N x C x H x W`` in [0, 1]."""
    return Brightness(severity, profile=profile)(x)


def spatter(
    x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None, profile: Profile = "auto"
) -> torch.Tensor:
    """ImageNet-C spatter (water or mud). ``x``: ``N x C x H x W`` in [0, 1]."""
    return Spatter(severity, profile=profile)(x, generator=generator)
