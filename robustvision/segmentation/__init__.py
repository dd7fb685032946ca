"""Semantic and interactive segmentation: ``interactive`` (click-based annotation) and ``uda`` (domain adaptation)."""
