"""ImageNet-C blur corruptions: defocus, glass, motion, zoom and Gaussian blur (batched torch).

Constants: ``imagenet`` rows from ``make_imagenet_c.py``, ``cifar`` rows from ``make_cifar_c.py``
(Hendrycks & Dietterich, ICLR 2019). Motion blur follows imagecorruptions' ImageMagick-free line kernel
(the original called ``MagickMotionBlurImage`` through Wand), so it differs slightly from the released files.
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np
import torch

from robustvision.noises.corruption_ops import (
    Corruption,
    Profile,
    clipped_zoom,
    filter2d,
    gaussian_filter,
    motion_blur_batch,
    rand,
    register_corruption,
)


@functools.lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The anti-aliased disk of the original ``disk()``: a normalised disk blurred by a small Gaussian.

    Radii up to 8 use a fixed 17x17 support and a 3x3 blur, larger ones ``2r + 1`` and a 5x5 blur.
    """
    if radius <= 8:
        span, ksize = np.arange(-8, 9), (3, 3)
    else:
        span, ksize = np.arange(-radius, radius + 1), (5, 5)
    xx, yy = np.meshgrid(span, span)
    aliased = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    aliased /= np.sum(aliased)
    return torch.from_numpy(cv2.GaussianBlur(aliased, ksize=ksize, sigmaX=alias_blur))


@register_corruption("defocus_blur", "blur")
class DefocusBlur(Corruption):
    """Convolution with an anti-aliased disk of radius ``c[0]`` (reflect-101 border, as ``cv2.filter2D``)."""

    table = {
        "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "cifar": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    }

    def apply(self, images, params, labels=None, model=None):
        radius, alias_blur = self.constants(images.shape)
        return filter2d(images, disk_kernel(radius, alias_blur)).clamp(0, 1)


@register_corruption("glass_blur", "blur")
class GlassBlur(Corruption):
    """Gaussian blur, local pixel shuffling (frosted glass), Gaussian blur again.

    The shuffle is the original sequential one: for ``iterations`` passes, every pixel ``(h, w)`` from the
    bottom-right corner inwards (``h, w`` from ``size - delta`` down to ``delta + 1``) takes the value of
    ``(h + dy, w + dx)``, ``dx, dy`` uniform integers in ``[-delta, delta)`` (the original's
    ``np.random.randint(-delta, delta)``; note the asymmetric range). The original meant to swap the two
    pixels, but its tuple assignment of numpy views copies ``x[h', w']`` into ``x[h, w]`` and then writes that
    same value back to ``x[h', w']``: a copy, not a swap. ImageNet-C was generated that way, so we keep it.
    The copy chains are resolved in parallel (:func:`glass_permutation`) and the pixels gathered once.
    """

    table = {
        # (sigma, max_delta, iterations)
        "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        "cifar": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        _, delta, iterations = self.constants(shape)
        n, _, h, w = shape
        steps = max(h - 2 * delta, 0) * max(w - 2 * delta, 0)
        dev = generator.device if generator is not None else torch.device("cpu")
        # offsets[..., 0] = dx, offsets[..., 1] = dy, in the original's draw order.
        offsets = torch.randint(-delta, delta, (n, iterations, steps, 2), generator=generator, device=dev)
        return {"offsets": offsets}

    def apply(self, images, params, labels=None, model=None):
        sigma, delta, _ = self.constants(images.shape)
        n, c, h, w = images.shape
        # the original stores the first blur as uint8 (truncating), then shuffles those bytes
        x = torch.floor(gaussian_filter(images, sigma) * 255) / 255
        perm = glass_permutation(params["offsets"].to(images.device), h, w, delta)
        idx = perm.unsqueeze(1).expand(n, c, h * w)
        shuffled = torch.gather(x.reshape(n, c, h * w), 2, idx).view(n, c, h, w)
        return gaussian_filter(shuffled, sigma).clamp(0, 1)


def glass_permutation(offsets: torch.Tensor, h: int, w: int, delta: int) -> torch.Tensor:
    """Source index of every pixel after the original's sequential copy loop, for each image (``N x H*W``).

    One pass writes each interior position ``p`` once, in decreasing raster order, with the current value at
    ``q = p + dy * W + dx``. If ``q`` is interior and ``q > p`` it was already written in this pass, so ``p``
    ends with whatever ``q`` ended with; otherwise ``p`` gets ``q``'s value from before the pass. Those links
    point strictly upwards, so pointer jumping resolves every chain in O(log length) batched gathers: the
    result equals the sequential loop exactly, with no Python loop over pixels.
    """
    n = offsets.shape[0]
    dev = offsets.device
    size = h * w
    pos = _shuffle_positions(h, w, delta).to(dev)
    interior = torch.zeros(size, dtype=torch.bool, device=dev)
    interior[pos] = True
    perm = torch.arange(size, device=dev).expand(n, size).contiguous()
    for it in range(offsets.shape[1]):
        q = pos.view(1, -1) + offsets[:, it, :, 1] * w + offsets[:, it, :, 0]  # n x steps
        src = torch.arange(size, device=dev).expand(n, size).contiguous()
        src[:, pos] = q
        link = torch.arange(size, device=dev).expand(n, size).contiguous()
        link[:, pos] = torch.where(interior[q] & (q > pos.view(1, -1)), q, pos.view(1, -1))
        while True:
            jumped = torch.gather(link, 1, link)
            if torch.equal(jumped, link):
                break
            link = jumped
        perm = torch.gather(perm, 1, torch.gather(src, 1, link))
    return perm


@functools.lru_cache(maxsize=16)
def _shuffle_positions(h: int, w: int, delta: int) -> torch.Tensor:
    # range(size - delta, delta, -1) of the original, empty when the image is too small to shuffle
    rows = torch.arange(max(h - delta, delta), delta, -1)
    cols = torch.arange(max(w - delta, delta), delta, -1)
    return (rows.view(-1, 1) * w + cols.view(1, -1)).reshape(-1)


@register_corruption("motion_blur", "blur")
class MotionBlur(Corruption):
    """Blur along a random direction: a one-sided Gaussian line kernel (radius, sigma), angle in [-45, 45)."""

    table = {
        # (radius, sigma)
        "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "cifar": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        return {"angle": -45 + 90 * rand((shape[0],), generator, torch.float64)}

    def apply(self, images, params, labels=None, model=None):
        radius, sigma = self.constants(images.shape)
        return motion_blur_batch(images, radius, sigma, params["angle"]).clamp_(0, 1)


@register_corruption("zoom_blur", "blur")
class ZoomBlur(Corruption):
    """Average of the image and centre zooms of it by each factor in ``numpy.arange(start, stop, step)``."""

    table = {
        # numpy.arange(start, stop, step) of zoom factors
        "imagenet": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
        "cifar": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    }

    def apply(self, images, params, labels=None, model=None):
        factors = np.arange(*self.constants(images.shape))
        # bilinear resizing is about 1.5x faster on channels-last memory; the result is returned contiguous
        x = images.contiguous(memory_format=torch.channels_last)
        out = x.clone()
        for z in factors:
            out.add_(clipped_zoom(x, float(z)))
        return out.div_(len(factors) + 1).clamp_(0, 1).contiguous()


@register_corruption("gaussian_blur", "extra")
class GaussianBlur(Corruption):
    """Gaussian blur with standard deviation ``c`` pixels (``skimage.filters.gaussian``, nearest border)."""

    table = {
        "imagenet": (1, 2, 3, 4, 6),
        "cifar": (0.4, 0.6, 0.7, 0.8, 1),
    }

    def apply(self, images, params, labels=None, model=None):
        return gaussian_filter(images, self.constants(images.shape)).clamp_(0, 1)


def defocus_blur(x: torch.Tensor, severity: int = 1, *, profile: Profile = "auto") -> torch.Tensor:
    """ImageNet-C defocus blur (deterministic). ``x``: ``N x C x H x W`` in [0, 1]."""
    return DefocusBlur(severity, profile=profile)(x)


def glass_blur(
    x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None, profile: Profile = "auto"
) -> torch.Tensor:
    """ImageNet-C glass blur. ``x``: ``N x C x H x W`` in [0, 1]."""
    return GlassBlur(severity, profile=profile)(x, generator=generator)


def motion_blur(
    x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None, profile: Profile = "auto"
) -> torch.Tensor:
    """ImageNet-C motion blur (line kernel, random angle). ``x``: ``N x C x H x W`` in [0, 1]."""
    return MotionBlur(severity, profile=profile)(x, generator=generator)


def zoom_blur(x: torch.Tensor, severity: int = 1, *, profile: Profile = "auto") -> torch.Tensor:
    """ImageNet-C zoom blur (deterministic). ``x``: ``N x C x H x W`` in [0, 1]."""
    return ZoomBlur(severity, profile=profile)(x)


def gaussian_blur(x: torch.Tensor, severity: int = 1, *, profile: Profile = "auto") -> torch.Tensor:
    """ImageNet-C Gaussian blur (deterministic). ``x``: ``N x C x H x W`` in [0, 1]."""
    return GaussianBlur(severity, profile=profile)(x)
