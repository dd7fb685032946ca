"""Noises: adversarial attacks, natural corruptions and system noise, behind one registry.

Importing this package registers every noise family.
"""

from robustvision.noises import (  # noqa: F401  (each registers noises)
    adversarial,
    apgd,
    autoattack,
    corruptions,
    cw,
    fab,
    l1_topk,
    pipeline,
    precision,
    square,
    system,
    transfer,
)
from robustvision.noises.base import NOISES, Noise, NoiseKind, Scoring, create_noise, list_noises

__all__ = ["NOISES", "Noise", "NoiseKind", "Scoring", "create_noise", "list_noises"]
