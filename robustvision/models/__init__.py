"""The model zoo and the model contract ([0, 1] images in, logits out, normalisation inside)."""

from robustvision.models.wrappers import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier, PixelNormalizer
from robustvision.models.zoo import MODELS, ZOO_ENTRIES, count_flops, count_parameters, create_model, list_models

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "ZOO_ENTRIES",
    "ImageClassifier",
    "PixelNormalizer",
    "count_flops",
    "count_parameters",
    "create_model",
    "list_models",
]
