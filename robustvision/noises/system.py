"""System noise: the image-pipeline differences a deployed model meets (RobustART's "ImageNet-S" and SysNoise).

Wang, Li & Gong, "Real World Robustness from Systematic Noise" (arXiv:2109.00864) and SysNoise
(arXiv:2307.00280): the same photograph decoded by another library, resized with another interpolation,
re-encoded, or converted through another colour mode changes a model's accuracy by 1-5 points.

Every noise here takes ``N x C x H x W`` floats in [0, 1], turns each image into the 8-bit array a real
pipeline holds, sends it through the real library call, and returns floats in [0, 1]:

* ``decode_<lib>``: encode once with PIL (JPEG, quality 90, like a stored data set file), decode with
  ``pil``, ``opencv``, ``torchvision`` (``torchvision.io.decode_jpeg``) or ``ffmpeg`` (PyAV's MJPEG decoder,
  RobustART's third decoder; needs ``pip install av``).
* ``resize_<lib>_<interp>``: resize to ``round(side * scale)`` and back with the same library and
  interpolation (default ``scale=0.875``: 224 -> 196 -> 224, 32 -> 28 -> 32, as RobustART's CIFAR-S).
  PIL: nearest, bilinear, box, hamming, bicubic, lanczos. OpenCV: nearest, bilinear, area, cubic, lanczos.
* ``jpeg_reencode_q<quality>``: one more JPEG round trip with PIL at quality 95, 90, 75 or 50.
* colour modes: ``color_bgr`` (channels reversed, a BGR/RGB mix-up), ``color_ycbcr_pil`` and
  ``color_yuv_opencv`` (8-bit round trips through those colour spaces), ``quantize_8bit``.

System noises have one setting each: ``severity`` must be 1.
"""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from robustvision.noises.base import NOISES, Noise, NoiseKind
from robustvision.noises.corruption_ops import from_uint8_hwc, to_uint8_hwc

DECODE_QUALITY = 90
JPEG_QUALITIES = (95, 90, 75, 50)
PIL_INTERPOLATIONS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "box": Image.BOX,
    "hamming": Image.HAMMING,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
}
OPENCV_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}


class SystemNoise(Noise):
    """Base class of the deterministic, per-image system noises (kind ``system``, one setting: severity 1)."""

    kind = NoiseKind.SYSTEM
    group = "system"
    # Colour-space conversions and JPEG know grey and RGB only; other channel counts are refused, never collapsed.
    grey_or_rgb_only = False

    def __init__(self, severity: int = 1) -> None:
        if isinstance(severity, bool) or severity != 1:
            raise ValueError(f"system noise {self.name!r} has a single setting: severity must be 1, got {severity!r}")
        super().__init__(1)

    def process(self, arr: np.ndarray) -> np.ndarray:
        """One image: ``H x W x 3`` (or ``H x W`` grey) uint8 in, the same shape and dtype out."""
        raise NotImplementedError

    def apply(self, images, params, labels=None, model=None):
        if self.grey_or_rgb_only and images.dim() == 4 and images.shape[1] not in (1, 3):
            raise ValueError(f"{self.name} needs 1- or 3-channel images, got {images.shape[1]} channels")
        out = [from_uint8_hwc(self.process(to_uint8_hwc(img)), img.shape[0]) for img in images]
        return torch.stack(out).to(images) if out else images.clone()


def _rgb(arr: np.ndarray) -> np.ndarray:
    return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr


def _back(arr_rgb: np.ndarray, like: np.ndarray) -> np.ndarray:
    return arr_rgb[..., 0] if like.ndim == 2 else arr_rgb


def pil_encode_jpeg(arr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# decoders


def _decode_pil(data: bytes, grey: bool) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L" if grey else "RGB"))


def _decode_opencv(data: bytes, grey: bool) -> np.ndarray:
    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    out = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    return out if grey else cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def _decode_torchvision(data: bytes, grey: bool) -> np.ndarray:
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if grey else ImageReadMode.RGB
    out = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    out = out.permute(1, 2, 0).numpy()
    return out[..., 0] if grey else out


def _decode_ffmpeg(data: bytes, grey: bool) -> np.ndarray:
    try:
        import av
    except ImportError as err:
        raise ImportError("decode_ffmpeg needs PyAV (FFmpeg bindings): pip install av") from err
    with av.open(io.BytesIO(data), format="jpeg_pipe") as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="gray" if grey else "rgb24")


DECODERS = {
    "pil": _decode_pil,
    "opencv": _decode_opencv,
    "torchvision": _decode_torchvision,
    "ffmpeg": _decode_ffmpeg,
}


class Decode(SystemNoise):
    """Encode with PIL as JPEG (quality 90), decode with another library.

    Args:
        decoder: ``pil``, ``opencv``, ``torchvision`` or ``ffmpeg``.
        quality: quality of the stored JPEG the decoders read.
    """

    def __init__(self, severity: int = 1, *, decoder: str = "pil", quality: int = DECODE_QUALITY) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        self.name = f"decode_{decoder}"
        super().__init__(severity)
        self.decoder = decoder
        self.quality = _check_quality(quality)

    @property
    def params(self) -> dict[str, Any]:
        return {"severity": 1, "decoder": self.decoder, "quality": self.quality}

    def process(self, arr):
        return DECODERS[self.decoder](pil_encode_jpeg(arr, self.quality), arr.ndim == 2)


def _check_quality(quality: object) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be an integer from 1 to 100, got {quality!r}")
    return int(quality)


# ----------------------------------------------------------------------------------------------------------------
# resizing


class Resize(SystemNoise):
    """Resize to ``round(side * scale)`` and back with the same library and interpolation.

    Args:
        library: ``pil`` or ``opencv``.
        interpolation: a key of ``PIL_INTERPOLATIONS`` or ``OPENCV_INTERPOLATIONS``.
        scale: the intermediate size as a fraction of the image side, in (0, 4], not 1.
    """

    def __init__(
        self, severity: int = 1, *, library: str = "pil", interpolation: str = "bilinear", scale: float = 0.875
    ) -> None:
        table = {"pil": PIL_INTERPOLATIONS, "opencv": OPENCV_INTERPOLATIONS}.get(library)
        if table is None:
            raise ValueError(f"library must be 'pil' or 'opencv', got {library!r}")
        if interpolation not in table:
            raise ValueError(f"{library} interpolation must be one of {list(table)}, got {interpolation!r}")
        if not 0 < float(scale) <= 4 or float(scale) == 1:
            raise ValueError(f"scale must be in (0, 4] and not 1, got {scale!r}")
        self.name = f"resize_{library}_{interpolation}"
        super().__init__(severity)
        self.library, self.interpolation, self.scale = library, interpolation, float(scale)

    @property
    def params(self) -> dict[str, Any]:
        return {"severity": 1, "library": self.library, "interpolation": self.interpolation, "scale": self.scale}

    def process(self, arr):
        h, w = arr.shape[:2]
        mid = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
        if self.library == "pil":
            mode = PIL_INTERPOLATIONS[self.interpolation]
            img = Image.fromarray(arr).resize(mid, mode).resize((w, h), mode)
            return np.asarray(img)
        mode = OPENCV_INTERPOLATIONS[self.interpolation]
        return cv2.resize(cv2.resize(arr, mid, interpolation=mode), (w, h), interpolation=mode)


# ----------------------------------------------------------------------------------------------------------------
# re-encoding and colour modes


class JpegReencode(SystemNoise):
    """One more JPEG round trip with PIL at ``quality``."""

    grey_or_rgb_only = True

    def __init__(self, severity: int = 1, *, quality: int = 75) -> None:
        self.quality = _check_quality(quality)
        self.name = f"jpeg_reencode_q{self.quality}"
        super().__init__(severity)

    @property
    def params(self) -> dict[str, Any]:
        return {"severity": 1, "quality": self.quality}

    def process(self, arr):
        return _decode_pil(pil_encode_jpeg(arr, self.quality), arr.ndim == 2)


class ColorBGR(SystemNoise):
    """Channels reversed: an RGB model fed OpenCV's BGR order (grey images are unchanged)."""

    name = "color_bgr"

    def process(self, arr):
        return arr if arr.ndim == 2 else np.ascontiguousarray(arr[..., ::-1])


class ColorYCbCrPIL(SystemNoise):
    """RGB -> YCbCr -> RGB through PIL's 8-bit conversions."""

    grey_or_rgb_only = True

    name = "color_ycbcr_pil"

    def process(self, arr):
        out = np.asarray(Image.fromarray(_rgb(arr)).convert("YCbCr").convert("RGB"))
        return _back(out, arr)


class ColorYUVOpenCV(SystemNoise):
    """RGB -> YUV -> RGB through OpenCV's 8-bit conversions."""

    grey_or_rgb_only = True

    name = "color_yuv_opencv"

    def process(self, arr):
        out = cv2.cvtColor(cv2.cvtColor(_rgb(arr), cv2.COLOR_RGB2YUV), cv2.COLOR_YUV2RGB)
        return _back(out, arr)


class Quantize8Bit(SystemNoise):
    """Rounding to 8 bits: what storing a float image as a PNG/uint8 array does."""

    name = "quantize_8bit"

    def apply(self, images, params, labels=None, model=None):
        return torch.round(images.clamp(0, 1) * 255) / 255


def _register() -> None:
    meta = {"kind": NoiseKind.SYSTEM, "family": "system"}
    for decoder in DECODERS:
        NOISES.add(f"decode_{decoder}", _builder(Decode, decoder=decoder), group="decoder", **meta)
    for interp in PIL_INTERPOLATIONS:
        builder = _builder(Resize, library="pil", interpolation=interp)
        NOISES.add(f"resize_pil_{interp}", builder, group="resize", **meta)
    for interp in OPENCV_INTERPOLATIONS:
        builder = _builder(Resize, library="opencv", interpolation=interp)
        NOISES.add(f"resize_opencv_{interp}", builder, group="resize", **meta)
    for q in JPEG_QUALITIES:
        NOISES.add(f"jpeg_reencode_q{q}", _builder(JpegReencode, quality=q), group="jpeg", **meta)
    for cls in (ColorBGR, ColorYCbCrPIL, ColorYUVOpenCV, Quantize8Bit):
        NOISES.add(cls.name, cls, group="color", **meta)


def _builder(cls, **fixed):
    def build(severity: int = 1, **kwargs: Any) -> Noise:
        return cls(severity, **{**fixed, **kwargs})

    build.__doc__ = cls.__doc__
    return build


_register()
