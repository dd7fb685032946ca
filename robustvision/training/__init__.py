"""Training: one Trainer, one base recipe, and training techniques as one-switch ablations (RobustART §1.5).

Example:
    >>> from robustvision.training import TrainConfig, train_model
    >>> metrics = train_model("lenet5", "digits", "pgd_at", TrainConfig(epochs=5))   # doctest: +SKIP
"""

from robustvision.training.api import train_classifier, train_model
from robustvision.training.config import TrainConfig
from robustvision.training.techniques import TECHNIQUES, Technique, create_technique, list_techniques
from robustvision.training.trainer import Trainer
from robustvision.training.zoo_presets import PRESETS, ZooCheckpoint, ensure_zoo, get_preset, list_presets

__all__ = [
    "PRESETS",
    "ZooCheckpoint",
    "ensure_zoo",
    "get_preset",
    "list_presets",
    "TECHNIQUES",
    "Technique",
    "TrainConfig",
    "Trainer",
    "create_technique",
    "list_techniques",
    "train_classifier",
    "train_model",
]
