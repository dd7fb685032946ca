"""ImageNet-C noise corruptions: gaussian, shot, impulse and speckle noise (batched torch).

Constants: ``imagenet`` rows from ``make_imagenet_c.py``, ``cifar`` rows from ``make_cifar_c.py``
(Hendrycks & Dietterich, ICLR 2019).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from robustvision.noises.corruption_ops import (
    Corruption,
    Profile,
    rand,
    randn,
    register_corruption,
    seed_from,
)


@register_corruption("gaussian_noise", "noise")
class GaussianNoise(Corruption):
    """Additive Gaussian noise ``clip(x + c * z)``, ``z ~ N(0, 1)`` per pixel and channel."""

    table = {
        "imagenet": (0.08, 0.12, 0.18, 0.26, 0.38),
        "cifar": (0.04, 0.06, 0.08, 0.09, 0.10),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        return {"noise": randn(tuple(shape), generator)}

    def apply(self, images, params, labels=None, model=None):
        c = self.constants(images.shape)
        return torch.add(images, params["noise"].to(images), alpha=c).clamp_(0, 1)


@register_corruption("shot_noise", "noise")
class ShotNoise(Corruption):
    """Poisson (shot) noise ``Poisson(c * x) / c``: fewer photons ``c`` is stronger noise.

    8-bit images (every value ``k / 255``, as decoded photographs are) are sampled exactly by inversion: one
    uniform ``u`` per value and ``min{j : F(j) > u}`` for the Poisson CDF ``F`` of rate ``c * k / 255``, read from
    a table of the 256 rates (:func:`poisson_inverse_table`). Other images fall back to ``torch.poisson``. Both
    draw from one CPU generator per image, seeded by ``params['seeds']``, so an image gets the same noise on
    every device (a CUDA generator's stream differs from the CPU's for the same seed).
    """

    table = {
        "imagenet": (60, 25, 12, 5, 3),
        "cifar": (500, 250, 100, 75, 50),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        # Poisson counts depend on the image, so we draw one seed per image and replay it in apply.
        return {"seeds": seed_from(generator, shape[0])}

    def apply(self, images, params, labels=None, model=None):
        c = float(self.constants(images.shape))
        seeds = params["seeds"].tolist()
        images = images.contiguous()
        bins = POISSON_TABLE_BINS
        # the level k = round(255 x); x is an 8-bit value when it equals k / 255 exactly (checked in the buffer
        # the uniforms go to next); then k * bins indexes the level's row of the table
        levels = images.mul(255).round_()
        u = torch.empty(images.shape, dtype=torch.float32, device=images.device)  # the table's precision
        if images.numel() and on_8bit_grid(images, levels, u):
            level_bins = levels.mul_(bins)
            on_cpu = u if u.device.type == "cpu" else torch.empty(u.shape, dtype=u.dtype)
            for i, seed in enumerate(seeds):  # u * bins, drawn directly (a power-of-two scale: exact)
                on_cpu[i].uniform_(0, bins, generator=torch.Generator().manual_seed(int(seed)))
            if on_cpu is not u:
                u.copy_(on_cpu)
            return _poisson_lookup(level_bins.float(), u, c).div_(c).clamp_(0, 1).to(images.dtype)
        out = torch.empty_like(images)
        for i, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            out[i] = torch.poisson(images[i].cpu() * c, generator=g).to(images.device) / c
        return out.clamp(0, 1)


def on_8bit_grid(
    images: torch.Tensor, levels: torch.Tensor, scratch: torch.Tensor, exact_division: bool | None = None
) -> bool:
    """Whether every value of ``images`` is exactly a float32 ``k / 255`` (``levels = round(images * 255)``;
    ``scratch`` a float32 buffer of the same shape that may be overwritten).

    On the CPU ``levels / 255`` is correctly rounded, so it is compared with the images directly, in
    ``scratch``. CUDA divides by a scalar through its reciprocal, which is not correctly rounded (an H200 run
    took photos off the grid and so off the exact sampler): there the levels index the 256 correctly rounded
    values made on the CPU. ``exact_division`` forces one way (tests).
    """
    if exact_division is None:
        exact_division = images.device.type == "cpu"
    if exact_division:
        return torch.equal(torch.div(levels, 255, out=scratch), images.float())
    grid = torch.arange(256, dtype=torch.float32).div_(255).to(images.device)
    return torch.equal(grid[levels.clamp(0, 255).long()], images.float())


POISSON_TABLE_BINS = 1024  # u-bins per level: 256 x 1024 x 2 float32 entries (2 MB), cache-friendly


@functools.lru_cache(maxsize=16)
def poisson_inverse_table(photons: float, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse-CDF tables of ``Poisson(photons * k / 255)`` for the 256 levels ``k``, on ``device``.

    The unit interval of ``u`` is cut into ``POISSON_TABLE_BINS`` bins per level. For level ``k`` and bin ``b``:
    ``base[k, b]`` is the sample at the bin's lowest ``u``; ``step[k, b]`` the one CDF value inside the bin (as
    the smallest float32 at or above it, so that ``u >= step`` is exact for float32 ``u``; 2 where none), times
    ``POISSON_TABLE_BINS``, so the sample is ``base + (u * bins >= step)``. Bins holding two or more CDF values
    (far tails) have ``base = -1 - sample at the bin's lowest u``; :func:`poisson_from_uniform` resolves them
    with ``cdf`` (float64 ``256 x J``, the last column forced above 1, which truncates a tail mass below 1e-20).
    """
    from scipy.special import gammaln

    lam = photons * np.arange(256, dtype=np.float64) / 255
    j = np.arange(int(photons + 12 * math.sqrt(photons) + 30), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = j[None] * np.log(lam[:, None]) - lam[:, None] - gammaln(j + 1)[None]
    logp[0] = -np.inf
    logp[0, 0] = 0.0  # rate 0: always 0
    cdf = np.cumsum(np.exp(logp), 1)
    cdf[:, -1] = 2.0
    bins = POISSON_TABLE_BINS
    low = np.arange(bins, dtype=np.float32) / bins
    high = np.nextafter((np.arange(bins, dtype=np.float32) + 1) / bins, np.float32(0)).astype(np.float64)
    base = np.stack([np.searchsorted(row, low.astype(np.float64), side="right") for row in cdf])
    top = np.stack([np.searchsorted(row, high, side="right") for row in cdf])
    # the CDF value inside one-step bins, rounded up to float32
    inside = np.take_along_axis(cdf, np.minimum(base, cdf.shape[1] - 1), 1)
    step32 = inside.astype(np.float32)
    step32 = np.where(step32.astype(np.float64) < inside, np.nextafter(step32, np.float32(np.inf)), step32)
    step32 = np.where(top == base + 1, step32, np.float32(2.0)) * np.float32(bins)  # in units of u * bins
    base = np.where(top - base > 1, -1 - base, base).astype(np.float32)
    return (
        torch.from_numpy(base.reshape(-1)).to(device),
        torch.from_numpy(step32.reshape(-1)).to(device),
        torch.from_numpy(cdf).to(device),
    )


def poisson_from_uniform(levels: torch.Tensor, u: torch.Tensor, photons: float) -> torch.Tensor:
    """Poisson counts ``min{j : F(j; photons * levels / 255) > u}`` (float), ``levels`` integers 0-255 (float),
    ``u`` float32 uniforms in [0, 1)."""
    bins = POISSON_TABLE_BINS
    return _poisson_lookup(levels.float().mul(bins).contiguous(), u.float().mul(bins).contiguous(), photons)


def _poisson_lookup(level_bins: torch.Tensor, u_bins: torch.Tensor, photons: float) -> torch.Tensor:
    """:func:`poisson_from_uniform` on ``levels * bins`` and ``u * bins`` (float32, contiguous).

    The counts are written into ``level_bins``'s memory (few full-size buffers: each new one costs page faults).
    """
    base, step, cdf = poisson_inverse_table(float(photons), str(u_bins.device))
    bins = POISSON_TABLE_BINS
    scratch = torch.floor(u_bins).add_(level_bins).view(-1)  # level * bins + bin, exact small integers
    idx = scratch.to(torch.int32)
    out = torch.index_select(base, 0, idx, out=level_bins.view(-1))
    # far-tail bins (rare, negative base) are found block-wise: a full-size nonzero costs more than the lookup
    block = 64
    n = out.numel()
    padded = out if n % block == 0 else torch.nn.functional.pad(out, (0, (-n) % block))
    blocks = (padded.view(-1, block).amin(1) < 0).nonzero().squeeze(1)
    where = None
    if blocks.numel():
        hit = (padded.view(-1, block).index_select(0, blocks) < 0).nonzero()
        where = blocks.index_select(0, hit[:, 0]) * block + hit[:, 1]
    above = torch.index_select(step, 0, idx, out=scratch)
    out.add_(torch.ge(u_bins.view(-1), above, out=above))
    if where is not None:  # walk the CDF up from the bin's lowest sample
        k = idx.index_select(0, where).long().div(bins, rounding_mode="floor")
        uu = u_bins.view(-1).index_select(0, where).double().div_(bins)
        j = (-1 - base.index_select(0, idx.index_select(0, where))).long()
        row = k * cdf.shape[1]
        flat = cdf.view(-1)
        while True:
            more = uu >= flat.index_select(0, row + j)
            if not bool(more.any()):
                break
            j += more.long()
        out.index_copy_(0, where, j.to(out.dtype))
    return out.view(u_bins.shape)


@register_corruption("impulse_noise", "noise")
class ImpulseNoise(Corruption):
    """Salt-and-pepper noise: each value independently becomes 0 or 1 (half each) with probability ``c``.

    This is the distribution of ``skimage.util.random_noise(mode='s&p')``. Rather than one uniform per value,
    ``sample_params`` draws the gaps between flipped values (geometric, by inversion), so it draws about
    ``2 c`` numbers per value instead of one: ``params['flip_index']`` (sorted flat indices into the batch) and
    ``params['flip_salt']`` (True = 1, False = 0). Per-value uniforms may be given instead to replay skimage's
    two draws exactly: ``params['flip']`` (``u1``, flipped where ``u1 <= c``) and optionally ``params['salt']``
    (``u2``, salt where ``u2 <= 0.5``; without it ``u1 <= c / 2`` is salt).
    """

    table = {
        "imagenet": (0.03, 0.06, 0.09, 0.17, 0.27),
        "cifar": (0.01, 0.02, 0.03, 0.05, 0.07),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        c = float(self.constants(shape))
        total = math.prod(shape)
        log_keep = math.log1p(-c)
        chunks, start = [], 0  # start: first flat index not yet decided
        while start < total:
            remaining = total - start
            k = int(c * remaining + 6 * math.sqrt(c * remaining) + 16)
            # failures before each success of a Bernoulli(c) sequence: floor(log(1 - u) / log(1 - c))
            steps = rand((k,), generator, torch.float64).neg_().add_(1).log_().div_(log_keep).floor_().add_(1).long()
            pos = steps.cumsum_(0).add_(start - 1)  # sorted flat indices
            chunks.append(pos[: int(torch.searchsorted(pos, total))])
            start = int(pos[-1]) + 1
        index = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)
        return {"flip_index": index, "flip_salt": rand((index.numel(),), generator) < 0.5}

    def apply(self, images, params, labels=None, model=None):
        if "flip" in params:
            c = self.constants(images.shape)
            u = params["flip"].to(images.device)
            flip = u <= c
            salt = params["salt"].to(images.device) <= 0.5 if "salt" in params else u <= c / 2
            return torch.where(flip, salt.to(images.dtype), images)
        out = images.clone(memory_format=torch.contiguous_format)
        index = params["flip_index"].to(images.device)
        out.view(-1).scatter_(0, index, params["flip_salt"].to(device=images.device, dtype=images.dtype))
        return out


@register_corruption("speckle_noise", "extra")
class SpeckleNoise(Corruption):
    """Multiplicative Gaussian noise ``clip(x + x * c * z)``."""

    table = {
        "imagenet": (0.15, 0.2, 0.35, 0.45, 0.6),
        "cifar": (0.06, 0.1, 0.12, 0.16, 0.2),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        return {"noise": randn(tuple(shape), generator)}

    def apply(self, images, params, labels=None, model=None):
        c = self.constants(images.shape)
        return torch.addcmul(images, images, params["noise"].to(images), value=c).clamp_(0, 1)


def gaussian_noise(
    x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None, profile: Profile = "auto"
) -> torch.Tensor:
    """ImageNet-C Gaussian noise. ``x``: ``N x C x H x W`` in [0, 1]; returns the same shape.

    Example:
        >>> gaussian_noise(torch.rand(2, 3, 32, 32), 3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 32, 32])
    """
    return GaussianNoise(severity, profile=profile)(x, generator=generator)


def shot_noise(
    x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None, profile: Profile = "auto"
) -> torch.Tensor:
    """ImageNet-C shot (Poisson) noise. ``x``: ``N x C x H x W`` in [0, 1]."""
    return ShotNoise(severity, profile=profile)(x, generator=generator)


def impulse_noise(
    x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None, profile: Profile = "auto"
) -> torch.Tensor:
    """ImageNet-C impulse (salt-and-pepper) noise. ``x``: ``N x C x H x W`` in [0, 1]."""
    return ImpulseNoise(severity, profile=profile)(x, generator=generator)


def speckle_noise(
    x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None, profile: Profile = "auto"
) -> torch.Tensor:
    """ImageNet-C speckle (multiplicative) noise. ``x``: ``N x C x H x W`` in [0, 1]."""
    return SpeckleNoise(severity, profile=profile)(x, generator=generator)
