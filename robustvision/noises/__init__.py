"""Noises: adversarial attacks, natural corruptions and system noise, behind one registry.

Importing this package registers every noise family.
"""

from robustvision.noises import adversarial, corruptions, precision, system  # noqa: F401  (each registers noises)
from robustvision.noises.base import NOISES, Noise, NoiseKind, create_noise, list_noises

__all__ = ["NOISES", "Noise", "NoiseKind", "create_noise", "list_noises"]
