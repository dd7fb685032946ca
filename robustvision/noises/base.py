"""The noise contract shared by adversarial, natural, system and physical noises.

A noise maps a batch of ``float32`` ``N x C x H x W`` images in [0, 1] to a batch of the same shape, dtype and
range. Random noises follow "sample, then apply": ``sample_params(shape, generator)`` draws every random number
the noise needs and ``apply(images, params)`` is deterministic, so any benchmark cell can be replayed exactly.
Adversarial noises need the model; the others ignore it.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch

from robustvision.registry import Registry


class NoiseKind(str, Enum):
    """The four kinds of noise the benchmark reports separately."""

    ADVERSARIAL = "adversarial"
    NATURAL = "natural"
    SYSTEM = "system"
    PHYSICAL = "physical"


class Scoring(str, Enum):
    """How the benchmark scores a noise: ``scoring`` metadata of a registered noise or an ImageNet-P sequence.

    ``accuracy`` (the default of every registered noise): accuracy on the noisy images; ``flip_probability``:
    how often the prediction changes along a perturbation sequence (ImageNet-P, lower is better).
    """

    ACCURACY = "accuracy"
    FLIP_PROBABILITY = "flip_probability"

    def __str__(self) -> str:
        return self.value


class Noise:
    """Base class of every noise.

    Subclasses set ``name`` and ``kind`` and implement ``apply`` (and ``sample_params`` when random).
    ``severity`` is the level on the noise's own scale (1-5 for corruptions, eps for attacks).

    Example:
        >>> noise = create_noise("gaussian_noise", severity=3)      # doctest: +SKIP
        >>> noisy = noise(images, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    """

    name: str = "noise"
    kind: NoiseKind = NoiseKind.NATURAL
    needs_model: bool = False

    def __init__(self, severity: float | int = 1) -> None:
        self.severity = severity

    @property
    def params(self) -> dict[str, Any]:
        """The settings that identify this noise in the results store (JSON-serialisable)."""
        return {"severity": self.severity}

    def sample_params(self, shape: torch.Size, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Draw the random numbers ``apply`` needs for a batch of ``shape`` (none for deterministic noises)."""
        return {}

    def apply(
        self, images: torch.Tensor, params: dict[str, Any], labels: torch.Tensor | None = None, model: Any = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        model: Any = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        from robustvision.validation import check_images

        check_images(images)
        if self.needs_model and model is None:
            raise ValueError(f"noise {self.name!r} is {self.kind.value} and needs a model; none was given")
        params = self.sample_params(images.shape, generator)
        return self.apply(images, params, labels=labels, model=model)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


NOISES: Registry[Noise] = Registry("noise")


def create_noise(name: str, **kwargs: Any) -> Noise:
    """Build a registered noise by name, e.g. ``create_noise("pgd_linf", eps=8/255)``."""
    return NOISES.create(name, **kwargs)


def list_noises(pattern: str = "*", kind: str | NoiseKind | None = None) -> list[str]:
    """Names of registered noises matching ``pattern`` (and ``kind`` when given)."""
    if kind is None:
        return NOISES.list(pattern)
    return NOISES.list(pattern, kind=NoiseKind(kind))
