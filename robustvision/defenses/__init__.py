"""Defenses: Gated Batch Normalization and multi-perturbation adversarial training (l1, l2, l-inf at once)."""

from robustvision.defenses.gbn import (
    DEFAULT_DOMAINS,
    GatedBatchNorm,
    GatedBatchNorm1d,
    GatedBatchNorm2d,
    convert_to_gbn,
    force_gate,
    gbn_layers,
    route_domain,
)

__all__ = [
    "DEFAULT_DOMAINS",
    "GatedBatchNorm",
    "GatedBatchNorm1d",
    "GatedBatchNorm2d",
    "convert_to_gbn",
    "force_gate",
    "gbn_layers",
    "route_domain",
]
