"""Noises: adversarial attacks, natural corruptions and system noise, behind one registry.

Importing this package registers every noise family.
"""

from robustvision.noises.base import NOISES, Noise, NoiseKind, create_noise, list_noises
from robustvision.noises import corruptions  # noqa: E402,F401  (registers the 19 ImageNet-C corruptions)
from robustvision.noises import precision, system  # noqa: E402,F401  (registers the system noises)

__all__ = ["NOISES", "Noise", "NoiseKind", "create_noise", "list_noises"]
