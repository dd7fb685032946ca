"""System noise of the image pipeline itself: RobustART's ImageNet-S on the original image files.

A classifier's validation pipeline decodes the stored JPEG, resizes the short side to 256 and centre-crops 224
(:func:`robustvision.data.imagefolder.resize_center_crop`, PIL decoder and PIL bilinear resize). RobustART's
ImageNet-S (Wang, Li & Gong, arXiv:2109.00864) swaps the decoder (PIL, OpenCV, FFmpeg) and the resize
interpolation (PIL: nearest, bilinear, box, hamming, bicubic, lanczos; OpenCV: nearest, bilinear, area, cubic,
lanczos) of that pipeline and measures the accuracy spread. These noises do the same on the *original files*:

* ``pipeline_decode_<lib>``: decode the file's bytes with ``opencv`` (``cv2.imdecode``, BGR -> RGB),
  ``torchvision`` (``torchvision.io.decode_jpeg``) or ``ffmpeg`` (PyAV's MJPEG decoder, ``pip install av``), then
  the usual PIL bilinear resize and crop;
* ``pipeline_resize_<lib>_<interp>``: decode with PIL, resize the short side with that library and interpolation,
  crop.

The PIL decoder with PIL bilinear is the clean pipeline itself (the ``clean`` cell), so it is not repeated.
Unlike the tensor-level ``decode_*`` / ``resize_*`` noises of :mod:`robustvision.noises.system`, these need the
image files: the bench runs them on file-backed data sets (``imagefolder``) and :meth:`PipelineNoise.load_files`
builds the evaluation images from the paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from robustvision.noises.base import NOISES, Noise, NoiseKind
from robustvision.noises.system import DECODERS, OPENCV_INTERPOLATIONS, PIL_INTERPOLATIONS

PIPELINE_DECODERS = ("opencv", "torchvision", "ffmpeg")


def decode_file(path: str | Path, decoder: str = "pil") -> np.ndarray:
    """Decode an image file's bytes with ``decoder`` to an ``H x W x 3`` uint8 RGB array.

    Raises:
        ValueError: the file cannot be decoded by that decoder (the message names the file).
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
    data = Path(path).read_bytes()
    try:
        arr = DECODERS[decoder](data, False)
    except ImportError:
        raise
    except Exception as err:  # each library raises its own types for a bad file
        raise ValueError(f"{decoder} cannot decode {str(path)!r}: {err}") from None
    if arr is None or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{decoder} cannot decode {str(path)!r} to an RGB image")
    return np.ascontiguousarray(arr)


def resize_crop(arr: np.ndarray, size: int, library: str = "pil", interpolation: str = "bilinear") -> np.ndarray:
    """The validation geometry (short side to ``size * 8/7``, centre crop ``size``) with one library's resize."""
    from robustvision.data.imagefolder import center_crop_box, resized_shape

    h, w = arr.shape[:2]
    shape = resized_shape(w, h, size)
    if shape is None:
        return arr
    if library == "pil":
        out = np.asarray(Image.fromarray(arr).resize(shape, PIL_INTERPOLATIONS[interpolation]))
    elif library == "opencv":
        out = cv2.resize(arr, shape, interpolation=OPENCV_INTERPOLATIONS[interpolation])
    else:
        raise ValueError(f"library must be 'pil' or 'opencv', got {library!r}")
    left, top, right, bottom = center_crop_box(*shape, size)
    return out[top:bottom, left:right]


class PipelineNoise(Noise):
    """One setting of the image pipeline: decoder x resize library x interpolation (kind ``system``).

    Args:
        decoder: ``pil``, ``opencv``, ``torchvision`` or ``ffmpeg``.
        library: ``pil`` or ``opencv`` (the resize).
        interpolation: a key of that library's interpolation table.
    """

    kind = NoiseKind.SYSTEM
    group = "pipeline"
    reads_files = True

    def __init__(
        self, severity: int = 1, *, decoder: str = "pil", library: str = "pil", interpolation: str = "bilinear"
    ) -> None:
        if isinstance(severity, bool) or severity != 1:
            raise ValueError(f"system noise has a single setting: severity must be 1, got {severity!r}")
        table = {"pil": PIL_INTERPOLATIONS, "opencv": OPENCV_INTERPOLATIONS}.get(library)
        if table is None:
            raise ValueError(f"library must be 'pil' or 'opencv', got {library!r}")
        if interpolation not in table:
            raise ValueError(f"{library} interpolation must be one of {list(table)}, got {interpolation!r}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        super().__init__(1)
        self.decoder, self.library, self.interpolation = decoder, library, interpolation
        self.name = f"pipeline_decode_{decoder}" if decoder != "pil" else f"pipeline_resize_{library}_{interpolation}"

    @property
    def params(self) -> dict[str, Any]:
        """The settings stored with each cell."""
        return {"severity": 1, "decoder": self.decoder, "library": self.library, "interpolation": self.interpolation}

    def load(self, path: str | Path, size: int) -> torch.Tensor:
        """One file through this pipeline: ``3 x size x size`` float32 in [0, 1]."""
        arr = resize_crop(decode_file(path, self.decoder), size, self.library, self.interpolation)
        return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)

    def load_files(self, paths: Sequence[str | Path], size: int) -> torch.Tensor:
        """The files through this pipeline: ``N x 3 x size x size`` float32 in [0, 1]."""
        if not paths:
            return torch.zeros(0, 3, size, size)
        return torch.stack([self.load(p, size) for p in paths])

    def apply(self, images, params, labels=None, model=None):
        """Refused: these noises act on the original files (:meth:`load_files`), not on tensors."""
        raise ValueError(
            f"{self.name} decodes and resizes the original image files, not tensors: evaluate it on a data set read "
            "from files (imagefolder), or use the tensor-level decode_*/resize_* system noises"
        )


def _builder(**fixed: str):
    def build(severity: int = 1) -> PipelineNoise:
        return PipelineNoise(severity, **fixed)

    build.__doc__ = PipelineNoise.__doc__
    return build


def _register() -> None:
    meta = {"kind": NoiseKind.SYSTEM, "family": "system", "group": "pipeline", "reads_files": True}
    for decoder in PIPELINE_DECODERS:
        NOISES.add(f"pipeline_decode_{decoder}", _builder(decoder=decoder), **meta)
    for library, table in (("pil", PIL_INTERPOLATIONS), ("opencv", OPENCV_INTERPOLATIONS)):
        for interp in table:
            if (library, interp) == ("pil", "bilinear"):
                continue  # the clean pipeline
            NOISES.add(f"pipeline_resize_{library}_{interp}", _builder(library=library, interpolation=interp), **meta)


_register()
