"""ImageNet-C noise corruptions: gaussian, shot, impulse and speckle noise (batched torch).

Constants: ``imagenet`` rows from ``make_imagenet_c.py``, ``cifar`` rows from ``make_cifar_c.py``
(Hendrycks & Dietterich, ICLR 2019).
"""

from __future__ import annotations

from typing import Any

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
    """Poisson (shot) noise ``Poisson(c * x) / c``: fewer photons ``c`` is stronger noise."""

    table = {
        "imagenet": (60, 25, 12, 5, 3),
        "cifar": (500, 250, 100, 75, 50),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        # Poisson counts depend on the image, so we draw one seed per image and replay it in apply.
        return {"seeds": seed_from(generator, shape[0])}

    def apply(self, images, params, labels=None, model=None):
        c = float(self.constants(images.shape))
        out = torch.empty_like(images)
        for i, seed in enumerate(params["seeds"].tolist()):
            g = torch.Generator(device=images.device).manual_seed(int(seed))
            out[i] = torch.poisson(images[i] * c, generator=g) / c
        return out.clamp(0, 1)


@register_corruption("impulse_noise", "noise")
class ImpulseNoise(Corruption):
    """Salt-and-pepper noise: a share ``c`` of the values is set to 0 or 1 (half each), per channel.

    One uniform draw ``u`` per value: ``u <= c / 2`` is salt, ``c / 2 < u <= c`` pepper. This is the
    distribution of ``skimage.util.random_noise(mode='s&p')``, which draws ``flip = u1 <= c`` and
    ``salt = u2 <= 0.5`` separately; ``params['salt']`` (u2) may be given to replay those two draws exactly.
    """

    table = {
        "imagenet": (0.03, 0.06, 0.09, 0.17, 0.27),
        "cifar": (0.01, 0.02, 0.03, 0.05, 0.07),
    }

    def sample_params(self, shape, generator=None) -> dict[str, Any]:
        return {"flip": rand(tuple(shape), generator)}

    def apply(self, images, params, labels=None, model=None):
        c = self.constants(images.shape)
        u = params["flip"].to(images.device)
        flip = u <= c
        salt = params["salt"].to(images.device) <= 0.5 if "salt" in params else u <= c / 2
        return torch.where(flip, salt.to(images.dtype), images)


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
