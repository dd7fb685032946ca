"""Health checks for robustness numbers: detect gradient masking before trusting a robust accuracy.

``robustvision.checks.run(model, (images, labels))`` runs the checks of :mod:`robustvision.checks.core` and returns
a :class:`CheckReport`; ``robustvision check MODEL`` does the same from the command line, and ``robustvision bench``
runs the cheap subset (:data:`CHEAP_CHECKS`) on every model.
"""

from robustvision.checks.core import (
    CHEAP_CHECKS,
    CHEAP_SETTINGS,
    CHECK_ORDER,
    CHECKS,
    CheckConfig,
    CheckContext,
    CheckReport,
    CheckResult,
    list_checks,
    run,
)
from robustvision.checks.masking import MASK_MODES, MaskedLogits

__all__ = [
    "CHEAP_CHECKS",
    "CHEAP_SETTINGS",
    "CHECKS",
    "CHECK_ORDER",
    "MASK_MODES",
    "CheckConfig",
    "CheckContext",
    "CheckReport",
    "CheckResult",
    "MaskedLogits",
    "list_checks",
    "run",
]
