"""The model zoo and the model contract ([0, 1] images in, logits out, normalisation inside)."""

from robustvision.models.wrappers import ImageClassifier
from robustvision.models.zoo import MODELS, ZOO_ENTRIES, count_flops, count_parameters, create_model, list_models

__all__ = ["MODELS", "ZOO_ENTRIES", "ImageClassifier", "count_flops", "count_parameters", "create_model", "list_models"]
