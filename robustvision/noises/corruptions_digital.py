"""ImageNet-C digital corruptions: contrast, elastic transform, pixelate, JPEG, plus saturate (an "extra").

Constants: ``imagenet`` rows from ``make_imagenet_c.py``, ``cifar`` rows from ``make_cifar_c.py``
(Hendrycks & Dietterich, ICLR 2019). Elastic transform and pixelate follow that original generator, not
imagecorruptions (which rescaled elastic's constants with the image size and upsamples pixelate with
``NEAREST`` instead of ``BOX``).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from robustvision.noises.corruption_ops import (
    Corruption,
    Profile,
    as_rgb,
    bilinear_sample,
    from_uint8_hwc,
    gaussian_filter,
    pil_box_resize,
    rand,
    register_corruption,
    to_uint8_hwc,
)


@register_corruption("contrast", "digital")
class Contrast(Corruption):
    """Contrast: ``(x - mean) * c + mean`` with the per-image, per-channel mean."""

    table = {
        "imagenet": (0.4, 0.3, 0.2, 0.1, 0.05),
        "cifar": (0.75, 0.5, 0.4, 0.3, 0.15),
    }

    def apply(self, images, params, labels=None, model=None):
        c = self.constants(images.shape)
        means = images.mean((2, 3), keepdim=True)
        # (x - mean) * c + mean, as one fused pass plus an in-place clamp
        return torch.lerp(means.expand_as(images), images, float(c)).clamp_(0, 1)


@register_corruption("elastic_transform", "digital")
class ElasticTransform(Corruption):
    """A random affine warp (three control points moved by up to ``c[2]`` px; ``cv2.warpAffine``, bilinear,
    reflect-101 border), then a smooth displacement field: uniform [-1, 1]
    noise blurred with sigma ``c[1]`` (scipy ``reflect``, truncate 3) times ``c[0]``, sampled bilinearly
    (``scipy.ndimage.map_coordinates(order=1, mode='reflect')``).
    """

    table = {
        # (alpha, sigma, affine jitter) in pixels; "244 should have been 224" says the original
        "imagenet": (
            (244 * 2, 244 * 0.7, 244 * 0.1),
            (244 * 2, 244 * 0.08, 244 * 0.2),
            (244 * 0.05, 244 * 0.01, 244 * 0.02),
            (244 * 0.07, 244 * 0.01, 244 * 0.02),
            (244 * 0.12, 244 * 0.01, 244 * 0.02),
        ),
        "cifar": (
            (32 * 0, 32 * 0, 32 * 0.08),
            (32 * 0.05, 32 * 0.2, 32 * 0.07),
            (32 * 0.08, 32 * 0.06, 32 * 0.06),
            (32 * 0.1, 32 * 0.04, 32 * 0.05),
            (32 * 0.1, 32 * 0.03, 32 * 0.03),
        ),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        n, _, h, w = shape
        return {
            "affine": rand((n, 3, 2), generator, torch.float64),
            "dx": rand((n, h, w), generator, torch.float64),
            "dy": rand((n, h, w), generator, torch.float64),
        }

    def apply(self, images, params, labels=None, model=None):
        alpha, sigma, jitter = self.constants(images.shape)
        n, _, h, w = images.shape
        dev = images.device
        warped = _random_affine(images, params["affine"], jitter)
        dx, dy = (-1 + 2 * params[k].to(dev) for k in ("dx", "dy"))
        if sigma > 0:  # the CIFAR table's severity 1 has sigma 0 (and alpha 0): no displacement at all
            dx = gaussian_filter(dx, sigma, mode="reflect", truncate=3.0)
            dy = gaussian_filter(dy, sigma, mode="reflect", truncate=3.0)
        dx = (dx * alpha).float()
        dy = (dy * alpha).float()
        rows = torch.arange(h, device=dev, dtype=torch.float64).view(1, h, 1)
        cols = torch.arange(w, device=dev, dtype=torch.float64).view(1, 1, w)
        out = bilinear_sample(warped, rows + dy.double(), cols + dx.double(), mode="reflect")
        return out.clamp(0, 1)


def _random_affine(images: torch.Tensor, uniform: torch.Tensor, jitter: float) -> torch.Tensor:
    n, _, h, w = images.shape
    dev = images.device
    # The original builds (x, y) control points from (H // 2, W // 2), i.e. swapped on non-square images.
    center = np.array([h // 2, w // 2], dtype=np.float32)
    sq = min(h, w) // 3
    src = np.float32([center + sq, [center[0] + sq, center[1] - sq], center - sq]).astype(np.float64)
    ys_all, xs_all = [], []
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    for i in range(n):
        dst = src + (-jitter + 2 * jitter * uniform[i].cpu().numpy()).astype(np.float32)
        a = np.hstack([src, np.ones((3, 1))])
        m = np.linalg.solve(a, dst).T  # 2 x 3, dst = m @ [x, y, 1]
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        # Exact source coordinates, as OpenCV 5's warpAffine computes them; OpenCV 4 rounded them to 1/32 px,
        # which moves edge pixels by up to ~3.5/255.
        xs = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
        ys = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
        xs_all.append(xs)
        ys_all.append(ys)
    ys_t = torch.from_numpy(np.stack(ys_all)).to(dev)
    xs_t = torch.from_numpy(np.stack(xs_all)).to(dev)
    return bilinear_sample(images, ys_t, xs_t, mode="mirror")


@register_corruption("pixelate", "digital")
class Pixelate(Corruption):
    """Pixelation: PIL ``BOX`` resize down to ``int(side * c)`` and ``BOX`` back up (batched as matrices)."""

    table = {
        "imagenet": (0.6, 0.5, 0.4, 0.3, 0.25),
        "cifar": (0.95, 0.9, 0.85, 0.75, 0.65),
    }

    def apply(self, images, params, labels=None, model=None):
        c = self.constants(images.shape)
        h, w = images.shape[-2:]
        small = pil_box_resize(images, (int(h * c), int(w * c)))
        return pil_box_resize(small, (h, w)).clamp(0, 1)


@register_corruption("jpeg_compression", "digital")
class JpegCompression(Corruption):
    """JPEG compression with PIL at quality ``c`` (per image; grey images go through RGB like the original)."""

    table = {
        "imagenet": (25, 18, 15, 10, 7),
        "cifar": (80, 65, 58, 50, 40),
    }

    def apply(self, images, params, labels=None, model=None):
        q = self.constants(images.shape)
        out = [pil_jpeg_roundtrip(img, q) for img in images]
        return torch.stack(out).to(images)


def pil_jpeg_roundtrip(img: torch.Tensor, quality: int, subsampling: int | None = None) -> torch.Tensor:
    """Encode one ``C x H x W`` image as JPEG with PIL at ``quality`` and decode it again."""
    arr = to_uint8_hwc(img)
    pil = Image.fromarray(arr).convert("RGB")
    buf = io.BytesIO()
    kwargs = {} if subsampling is None else {"subsampling": subsampling}
    pil.save(buf, "JPEG", quality=int(quality), **kwargs)
    decoded = Image.open(buf)
    decoded = decoded.convert("L") if img.shape[0] == 1 else decoded.convert("RGB")
    return from_uint8_hwc(np.asarray(decoded), img.shape[0])


@register_corruption("saturate", "extra")
class Saturate(Corruption):
    """Saturation: HSV saturation ``s * c[0] + c[1]`` (grey images go through RGB like the original)."""

    table = {
        "imagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
        "cifar": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    }

    def apply(self, images, params, labels=None, model=None):
        scale, shift = self.constants(images.shape)
        x, grey = as_rgb(images)
        # With hue and value fixed, each channel is v - v * s * w(hue): rescale its distance to the max by s'/s.
        v = x.amax(1, keepdim=True)
        delta = v - x.amin(1, keepdim=True)
        s = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
        s_new = (s * scale + shift).clamp(0, 1)
        out = v - (v - x) * (s_new / torch.where(s > 0, s, torch.ones_like(s)))
        # grey pixels have hue 0 (red) in skimage's rgb2hsv: red keeps v, green and blue drop to v (1 - s')
        grey_px = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], 1)
        out = torch.where(delta > 0, out, grey_px).clamp(0, 1)
        return out[:, :1] if grey else out


def contrast(x: torch.Tensor, severity: int = 1, *, profile: Profile = "auto") -> torch.Tensor:
    """ImageNet-C contrast (deterministic). ``x``: ``N x C x H x W`` in [0, 1]."""
    return Contrast(severity, profile=profile)(x)


def elastic_transform(
    x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None, profile: Profile = "auto"
) -> torch.Tensor:
    """ImageNet-C elastic transform. ``x``: ``N x C x H x W`` in [0, 1]."""
    return ElasticTransform(severity, profile=profile)(x, generator=generator)


def pixelate(x: torch.Tensor, severity: int = 1, *, profile: Profile = "auto") -> torch.Tensor:
    """ImageNet-C pixelate (deterministic). ``x``: ``N x C x H x W`` in [0, 1]."""
    return Pixelate(severity, profile=profile)(x)


def jpeg_compression(x: torch.Tensor, severity: int = 1, *, profile: Profile = "auto") -> torch.Tensor:
    """ImageNet-C JPEG compression (deterministic). ``x``: ``N x C x H x W`` in [0, 1]."""
    return JpegCompression(severity, profile=profile)(x)


def saturate(x: torch.Tensor, severity: int = 1, *, profile: Profile = "auto") -> torch.Tensor:
    """ImageNet-C saturate (deterministic). ``x``: ``N x C x H x W`` in [0, 1]."""
    return Saturate(severity, profile=profile)(x)
