"""Unsupervised domain adaptation for semantic segmentation: source-only, MinEnt (ADVENT) and CFContra.

CFContra (Tang et al., "Unsupervised domain adaptation via coarse-to-fine feature alignment method using
contrastive learning", arXiv:2103.12371) adds to ADVENT's entropy minimisation a coarse, image-level alignment
(here Fourier Domain Adaptation) and a fine, class-wise contrastive alignment against a memory-efficient bank of
per-domain class prototypes.

Example:
    >>> from robustvision.segmentation.uda import AdaptConfig, adapt, generate_streets
    >>> src, tgt = generate_streets("source", 8, (32, 64)), generate_streets("target", 8, (32, 64))
    >>> result = adapt(AdaptConfig(method="minent", iters=2, batch_size=2), src, tgt)
"""

from robustvision.segmentation.uda.data import GTA5, Cityscapes, PhotoFolder, TensorSegmentation, parse_size
from robustvision.segmentation.uda.evaluate import (
    SegMetrics,
    confusion_matrix,
    evaluate_segmenter,
    metrics_from_confusion,
    save_confusion_png,
    save_overlays,
)
from robustvision.segmentation.uda.labels import CLASS_NAMES, ID_TO_TRAINID, IGNORE_INDEX, ids_to_train_ids
from robustvision.segmentation.uda.losses import entropy_loss, seg_cross_entropy
from robustvision.segmentation.uda.memory import PrototypeMemory
from robustvision.segmentation.uda.segmenter import SEGMENTERS, DeepLabV2, create_segmenter, list_segmenters
from robustvision.segmentation.uda.specs import open_domain
from robustvision.segmentation.uda.style import fda_source_to_target
from robustvision.segmentation.uda.synthetic import BENCHMARK_CLASSES, generate_streets
from robustvision.segmentation.uda.train import METHODS, AdaptConfig, AdaptResult, adapt, load_adapted, save_adapted

__all__ = [
    "BENCHMARK_CLASSES", "CLASS_NAMES", "GTA5", "ID_TO_TRAINID", "IGNORE_INDEX", "METHODS", "SEGMENTERS",
    "AdaptConfig", "AdaptResult", "Cityscapes", "DeepLabV2", "PhotoFolder", "PrototypeMemory", "SegMetrics",
    "TensorSegmentation", "adapt", "confusion_matrix", "create_segmenter", "entropy_loss", "evaluate_segmenter",
    "fda_source_to_target", "generate_streets", "ids_to_train_ids", "list_segmenters", "load_adapted",
    "metrics_from_confusion", "open_domain", "parse_size", "save_adapted", "save_confusion_png", "save_overlays",
    "seg_cross_entropy",
]  # fmt: skip
