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
import torch.nn.functional as F
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
            "dx": rand((n, h, w), generator),
            "dy": rand((n, h, w), generator),
        }

    def apply(self, images, params, labels=None, model=None):
        alpha, sigma, jitter = self.constants(images.shape)
        n, _, h, w = images.shape
        dev = images.device
        warped = _random_affine(images, params["affine"], jitter)
        # both displacement fields at once: uniform [-1, 1], smoothed, times alpha
        disp = torch.stack([params["dx"].to(dev), params["dy"].to(dev)], 1).to(images.dtype).mul_(2).sub_(1)
        if sigma > 0:  # the CIFAR table's severity 1 has sigma 0 (and alpha 0): no displacement at all
            disp = gaussian_filter(disp, sigma, mode="reflect", truncate=3.0)
        # map_coordinates(order=1, mode='reflect') at (row + dy, col + dx): grid_sample's reflection padding
        # without corner alignment, in its normalised coordinates (2 * p + 1) / size - 1
        grid = torch.empty((n, h, w, 2), device=dev, dtype=images.dtype)
        cols = torch.arange(w, device=dev, dtype=images.dtype).mul_(2).add_(1).div_(w).sub_(1)
        rows = torch.arange(h, device=dev, dtype=images.dtype).mul_(2).add_(1).div_(h).sub_(1).view(h, 1)
        torch.add(cols, disp[:, 0], alpha=2 * alpha / w, out=grid[..., 0])
        torch.add(rows, disp[:, 1], alpha=2 * alpha / h, out=grid[..., 1])
        out = F.grid_sample(warped, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return out.clamp_(0, 1)


def _random_affine(images: torch.Tensor, uniform: torch.Tensor, jitter: float) -> torch.Tensor:
    """``cv2.warpAffine(..., borderMode=BORDER_REFLECT_101)`` of each image by the original's random affine."""
    n, _, h, w = images.shape
    dev = images.device
    # The original builds (x, y) control points from (H // 2, W // 2), i.e. swapped on non-square images.
    center = np.array([h // 2, w // 2], dtype=np.float32)
    sq = min(h, w) // 3
    if sq == 0:  # under 3 px a side the original's three control points coincide: no affine part is defined
        return images.clone()
    src = np.float32([center + sq, [center[0] + sq, center[1] - sq], center - sq]).astype(np.float64)
    a = np.hstack([src, np.ones((3, 1))])
    inverse = []
    for i in range(n):
        dst = src + (-jitter + 2 * jitter * uniform[i].cpu().numpy()).astype(np.float32)
        m = np.linalg.solve(a, dst).T  # 2 x 3, dst = m @ [x, y, 1]
        # Exact source coordinates, as OpenCV 5's warpAffine computes them; OpenCV 4 rounded them to 1/32 px,
        # which moves edge pixels by up to ~3.5/255.
        inverse.append(np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2])
    inv = np.stack(inverse)  # n x 2 x 3: (x_src, y_src) = inv @ [x, y, 1]
    if h < 2 or w < 2:
        gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
        xs = inv[:, 0, 0, None, None] * gx + inv[:, 0, 1, None, None] * gy + inv[:, 0, 2, None, None]
        ys = inv[:, 1, 0, None, None] * gx + inv[:, 1, 1, None, None] * gy + inv[:, 1, 2, None, None]
        return bilinear_sample(images, torch.from_numpy(ys).to(dev), torch.from_numpy(xs).to(dev), mode="mirror")
    # BORDER_REFLECT_101 for bilinear taps is grid_sample's reflection padding about the edge pixels' centres
    # (align_corners=True), whose normalised coordinate is 2 * p / (size - 1) - 1: fold that into the affine.
    to_norm = np.array([[2 / (w - 1), 0, -1], [0, 2 / (h - 1), -1], [0, 0, 1]])
    from_norm = np.linalg.inv(to_norm)
    theta = to_norm[None] @ np.concatenate([inv, np.tile([[[0, 0, 1]]], (n, 1, 1))], 1) @ from_norm[None]
    theta_t = torch.from_numpy(theta[:, :2]).to(device=dev, dtype=images.dtype)
    grid = F.affine_grid(theta_t, [n, images.shape[1], h, w], align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


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
        small = pil_box_resize(images, (max(1, int(h * c)), max(1, int(w * c))))
        return pil_box_resize(small, (h, w)).clamp_(0, 1)


@register_corruption("jpeg_compression", "digital")
class JpegCompression(Corruption):
    """JPEG compression with PIL at quality ``c`` (per image; grey images go through RGB like the original)."""

    table = {
        "imagenet": (25, 18, 15, 10, 7),
        "cifar": (80, 65, 58, 50, 40),
    }

    def apply(self, images, params, labels=None, model=None):
        q = int(self.constants(images.shape))
        n, c, h, w = images.shape
        if c not in (1, 3):  # JPEG has grey and colour (RGB) images only
            raise ValueError(f"jpeg_compression needs 1- or 3-channel images, got {c} channels")
        # one batched conversion each way, planes kept planar (PIL merges and splits the channels in C);
        # PIL only encodes and decodes
        u8 = images.detach().mul(255).round_().clamp_(0, 255).cpu().numpy().astype(np.uint8)
        decoded = np.empty((n, c, h, w), dtype=np.uint8)
        for i in range(n):
            planes = [Image.fromarray(u8[i, ch]) for ch in range(c)]
            buf = io.BytesIO()
            (Image.merge("RGB", planes) if c == 3 else planes[0].convert("RGB")).save(buf, "JPEG", quality=q)
            img = Image.open(buf)
            for ch, band in enumerate([img.convert("L")] if c == 1 else img.split()):
                decoded[i, ch] = np.asarray(band)
        return torch.from_numpy(decoded.astype(np.float32)).to(device=images.device, dtype=images.dtype).div_(255)


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
