"""Segmentation: interactive segmentation (EdgeFlow, ``interactive``) and domain adaptation (``uda``)."""
