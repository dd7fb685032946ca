"""The 19 ImageNet-C corruptions (15 benchmark + 4 extra), batched in torch, registered as ``natural`` noises.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
ICLR 2019 (arXiv:1903.12261). Each corruption is a pure function ``name(x, severity, *, generator=None)``
and a registered :class:`~robustvision.noises.corruption_ops.Corruption` subclass that samples its random
numbers first (``sample_params``) and applies them deterministically (``apply``).

Example:
    >>> import torch
    >>> from robustvision.noises import create_noise
    >>> noise = create_noise("fog", severity=3)
    >>> out = noise(torch.rand(4, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    >>> out.shape
    torch.Size([4, 3, 32, 32])
"""

from __future__ import annotations

import torch

from robustvision.noises.corruption_ops import CIFAR_MAX_SIDE, Corruption, check_severity, resolve_profile
from robustvision.noises.corruptions_blur import (
    DefocusBlur,
    GaussianBlur,
    GlassBlur,
    MotionBlur,
    ZoomBlur,
    defocus_blur,
    gaussian_blur,
    glass_blur,
    motion_blur,
    zoom_blur,
)
from robustvision.noises.corruptions_digital import (
    Contrast,
    ElasticTransform,
    JpegCompression,
    Pixelate,
    Saturate,
    contrast,
    elastic_transform,
    jpeg_compression,
    pixelate,
    saturate,
)
from robustvision.noises.corruptions_noise import (
    GaussianNoise,
    ImpulseNoise,
    ShotNoise,
    SpeckleNoise,
    gaussian_noise,
    impulse_noise,
    shot_noise,
    speckle_noise,
)
from robustvision.noises.corruptions_weather import (
    Brightness,
    Fog,
    Frost,
    Snow,
    Spatter,
    brightness,
    fog,
    frost,
    frost_texture,
    snow,
    spatter,
)

# The benchmark's 15 corruptions in the paper's order, then the 4 "extra" (validation) ones.
BENCHMARK_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS

CORRUPTION_CLASSES: dict[str, type[Corruption]] = {
    cls.name: cls
    for cls in (
        GaussianNoise,
        ShotNoise,
        ImpulseNoise,
        DefocusBlur,
        GlassBlur,
        MotionBlur,
        ZoomBlur,
        Snow,
        Frost,
        Fog,
        Brightness,
        Contrast,
        ElasticTransform,
        Pixelate,
        JpegCompression,
        SpeckleNoise,
        GaussianBlur,
        Spatter,
        Saturate,
    )
}


def corrupt(
    x: torch.Tensor,
    name: str,
    severity: int = 1,
    *,
    generator: torch.Generator | None = None,
    profile: str = "auto",
) -> torch.Tensor:
    """Apply the corruption ``name`` at ``severity`` (1-5) to ``N x C x H x W`` images in [0, 1].

    Raises:
        KeyError: unknown corruption name (with close-name hints).
        ValueError: severity outside 1-5 or an unknown profile.
    """
    if name not in CORRUPTION_CLASSES:
        from robustvision.noises.base import NOISES

        raise KeyError(NOISES.unknown_message(name))
    return CORRUPTION_CLASSES[name](severity, profile=profile)(x, generator=generator)


__all__ = [
    "ALL_CORRUPTIONS",
    "BENCHMARK_CORRUPTIONS",
    "CIFAR_MAX_SIDE",
    "CORRUPTION_CLASSES",
    "EXTRA_CORRUPTIONS",
    "Corruption",
    "brightness",
    "check_severity",
    "contrast",
    "corrupt",
    "defocus_blur",
    "elastic_transform",
    "fog",
    "frost",
    "frost_texture",
    "gaussian_blur",
    "gaussian_noise",
    "glass_blur",
    "impulse_noise",
    "jpeg_compression",
    "motion_blur",
    "pixelate",
    "resolve_profile",
    "saturate",
    "shot_noise",
    "snow",
    "spatter",
    "speckle_noise",
    "zoom_blur",
]
