"""ImageNet-P style perturbation sequences and the flip probability metric.

Hendrycks & Dietterich, ICLR 2019 (arXiv:1903.12261), ``make_imagenet_p.py``: each clean image becomes a
short video whose frames change by small steps; a stable classifier keeps its prediction across frames.
Frame parameters follow that script (31 frames, 41 for translate). Translations are given in pixels for
224x224 and scaled by ``min(H, W) / 224`` for other sizes; blur sigmas and radii are kept in pixels, as
CIFAR-10-C keeps its blur constants close to ImageNet-C's. The original transformed the uncropped photo and then
cropped 224x224; we only have the crop, so geometric frames sample outside it by reflection.

Flip probability (Hendrycks' FP, as RobustART's ``flip_prob``): for the noise sequences, frames are compared
with frame 0 (the clean image); for every other sequence, each frame with the one before it::

    FP = 1 / (m (n - 1)) * sum_videos sum_{j=2..n} 1[f(x_j) != f(x_ref(j))],  ref(j) = 1 (noise) or j - 1

Lower is better (RobustART stores ``-FP`` to read "higher is better").

Example:
    >>> import torch
    >>> seq = perturbation_sequence(torch.rand(2, 3, 32, 32), "rotate")
    >>> seq.shape
    torch.Size([31, 2, 3, 32, 32])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from robustvision.noises.base import Scoring
from robustvision.noises.corruption_ops import (
    clipped_zoom,
    gaussian_filter,
    hsv_to_rgb,
    motion_blur_batch,
    rgb_to_gray,
    rgb_to_hsv,
)
from robustvision.validation import check_images


@dataclass(frozen=True)
class PerturbationSpec:
    """One sequence kind: its frame count, whether it is a noise sequence (FP against frame 0), its builder.

    ``scoring`` is the registry metadata the benchmark reads: every ImageNet-P sequence is scored by flip probability.
    """

    name: str
    frames: int
    noise: bool
    build: Callable[[torch.Tensor, int, float, torch.Generator | None], torch.Tensor]  # (x, T, px, g) -> T x N..
    scoring: Scoring = Scoring.FLIP_PROBABILITY


def _per_frame(fn: Callable) -> Callable:
    def build(x, frames, px, g):
        return torch.stack([fn(x, i, px, g) for i in range(frames)])

    return build


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x).expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _translate(x, i, px, g):
    shift = (i - 20) * px  # -20 .. 20 pixels at 224
    theta = torch.tensor([[1.0, 0.0, -2 * shift / x.shape[-1]], [0.0, 1.0, 0.0]])
    return _affine(x, theta)


def _rotate(x, i, px, g):
    a = math.radians(i - 15)  # -15 .. 15 degrees
    h, w = x.shape[-2:]
    theta = torch.tensor([[math.cos(a), -math.sin(a) * h / w, 0.0], [math.sin(a) * w / h, math.cos(a), 0.0]])
    return _affine(x, theta)


def _scale(x, i, px, g):
    s = (i * 2.5 + 40) / 100  # 0.40 .. 1.15
    return _affine(x, torch.tensor([[1 / s, 0.0, 0.0], [0.0, 1 / s, 0.0]]))


def _shear(x, i, px, g):
    # Our parameters: horizontal shear of -15 .. 15 degrees, the same range as rotate and tilt.
    t = math.tan(math.radians(i - 15))
    return _affine(x, torch.tensor([[1.0, t, 0.0], [0.0, 1.0, 0.0]]))


def _tilt(x, i, px, g):
    # The original's perspective: rotate the image plane by phi = theta = i - 15 degrees about its centre,
    # camera at distance f = diagonal; warp with the inverse homography.
    h, w = x.shape[-2:]
    phi = theta = np.deg2rad(i - 15)
    f = np.sqrt(w**2 + h**2)
    p1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
    rx = np.array(
        [[1, 0, 0, 0], [0, np.cos(theta), -np.sin(theta), 0], [0, np.sin(theta), np.cos(theta), 0], [0, 0, 0, 1]]
    )
    ry = np.array([[np.cos(phi), 0, -np.sin(phi), 0], [0, 1, 0, 0], [np.sin(phi), 0, np.cos(phi), 0], [0, 0, 0, 1]])
    t = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    p2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    inv = np.linalg.inv(p2 @ t @ rx @ ry @ p1)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    src = inv @ np.stack([gx.ravel(), gy.ravel(), np.ones(h * w)])
    sx, sy = src[0] / src[2], src[1] / src[2]
    grid = np.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1).reshape(1, h, w, 2)
    grid_t = torch.from_numpy(grid).to(x).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid_t, mode="bilinear", padding_mode="reflection", align_corners=False)


def _brightness(x, i, px, g):
    c = (i - 15) * 2 / 100  # -0.30 .. 0.30 added to the HSV value
    if x.shape[1] != 3:
        return (x + c).clamp(0, 1)
    hsv = rgb_to_hsv(x)
    return hsv_to_rgb(torch.stack([hsv[:, 0], hsv[:, 1], (hsv[:, 2] + c).clamp(0, 1)], 1)).clamp(0, 1)


def _noise(kind: str) -> Callable:
    def frame(x, i, px, g):
        if i == 0:
            return x.clone()
        dev = g.device if g is not None else torch.device("cpu")
        if kind == "gaussian_noise":
            return (x + 0.05 * torch.randn(x.shape, generator=g, device=dev).to(x)).clamp(0, 1)
        if kind == "speckle_noise":
            return (x + x * 0.05 * torch.randn(x.shape, generator=g, device=dev).to(x)).clamp(0, 1)
        seed = int(torch.randint(0, 2**62, (1,), generator=g, device=dev))
        counts = torch.poisson(x * 300, generator=torch.Generator(device=x.device).manual_seed(seed))
        return (counts / 300).clamp(0, 1)

    return frame


def _gaussian_blur(x, i, px, g):
    return gaussian_filter(x, 0.25 + 0.035 * i, truncate=6.0).clamp(0, 1)


def _motion_blur(x, i, px, g):
    angles = torch.full((x.shape[0],), float((i - 30) * 4), dtype=torch.float64)
    return motion_blur_batch(x, 10, 3, angles).clamp(0, 1)


def _zoom_blur_frames(x: torch.Tensor, frames: int, px: float, g: torch.Generator | None) -> torch.Tensor:
    # frame i: average of the image zoomed by 1, 1.004, ..., 1 + 0.004 i (the running average of the original)
    acc = x.clone()
    out = [x.clone()]
    for i in range(1, frames):
        acc = acc + clipped_zoom(x, 1 + 0.004 * i)
        out.append((acc / (i + 1)).clamp(0, 1))
    return torch.stack(out)


def _snow_frames(x: torch.Tensor, frames: int, px: float, g: torch.Generator | None) -> torch.Tensor:
    # one snow layer per video, blown around: the motion-blur angle turns by 4 degrees a frame
    n, _, h, w = x.shape
    dev = g.device if g is not None else torch.device("cpu")
    layer = torch.randn((n, 1, h, w), generator=g, device=dev).to(x) * 0.3 + 0.05
    layer = clipped_zoom(layer, 3)
    layer = torch.where(layer < 0.5, torch.zeros_like(layer), layer).clamp(0, 1)
    base = 0.85 * x + 0.15 * torch.maximum(x, rgb_to_gray(x) * 1.5 + 0.5)
    out = []
    for i in range(frames):
        angles = torch.full((n,), float(i * 4 - 150), dtype=torch.float64)
        moving = motion_blur_batch(layer, 14, 4, angles)
        moving = torch.round(moving * 255) / 255
        out.append((base + moving + torch.rot90(moving, 2, (-2, -1))).clamp(0, 1))
    return torch.stack(out)


PERTURBATIONS: dict[str, PerturbationSpec] = {
    s.name: s
    for s in (
        PerturbationSpec("translate", 41, False, _per_frame(_translate)),
        PerturbationSpec("rotate", 31, False, _per_frame(_rotate)),
        PerturbationSpec("scale", 31, False, _per_frame(_scale)),
        PerturbationSpec("tilt", 31, False, _per_frame(_tilt)),
        PerturbationSpec("shear", 31, False, _per_frame(_shear)),
        PerturbationSpec("brightness", 31, False, _per_frame(_brightness)),
        PerturbationSpec("gaussian_blur", 31, False, _per_frame(_gaussian_blur)),
        PerturbationSpec("motion_blur", 31, False, _per_frame(_motion_blur)),
        PerturbationSpec("zoom_blur", 31, False, _zoom_blur_frames),
        PerturbationSpec("snow", 31, False, _snow_frames),
        PerturbationSpec("gaussian_noise", 31, True, _per_frame(_noise("gaussian_noise"))),
        PerturbationSpec("shot_noise", 31, True, _per_frame(_noise("shot_noise"))),
        PerturbationSpec("speckle_noise", 31, True, _per_frame(_noise("speckle_noise"))),
    )
}


def list_perturbations() -> list[str]:
    """Names of the perturbation sequences."""
    return sorted(PERTURBATIONS)


def perturbation_sequence(
    x: torch.Tensor, name: str, *, frames: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The ``name`` sequence for each image: ``T x N x C x H x W`` in [0, 1].

    Args:
        x: ``N x C x H x W`` clean images in [0, 1].
        name: one of :func:`list_perturbations`.
        frames: number of frames (default: the original's 31, or 41 for translate); the parameter of frame
            ``i`` is the original's, so fewer frames cover the start of the original range only.
        generator: randomness for the noise and snow sequences.
    """
    check_images(x)
    if name not in PERTURBATIONS:
        raise KeyError(f"unknown perturbation {name!r}; known: {', '.join(list_perturbations())}")
    spec = PERTURBATIONS[name]
    frames = spec.frames if frames is None else int(frames)
    if frames < 2:
        raise ValueError(f"a perturbation sequence needs at least 2 frames, got {frames}")
    return spec.build(x, frames, min(x.shape[-2:]) / 224, generator)


def flip_probability(predictions: torch.Tensor, *, noise: bool) -> float:
    """Hendrycks' flip probability of ``T x N`` predicted labels (``T`` frames of ``N`` videos).

    ``noise=True`` compares every frame with frame 0; otherwise each frame with the previous one.
    Returns the share of flips in [0, 1] (lower is better).
    """
    if predictions.dim() != 2 or predictions.shape[0] < 2:
        raise ValueError(f"predictions must be T x N with T >= 2 frames, got shape {tuple(predictions.shape)}")
    ref = predictions[:1].expand(predictions.shape[0] - 1, -1) if noise else predictions[:-1]
    return float((predictions[1:] != ref).float().mean())


@torch.no_grad()
def sequence_predictions(model: torch.nn.Module, sequence: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Top-1 predictions ``T x N`` of ``model`` on a ``T x N x C x H x W`` sequence (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    try:
        flat = sequence.reshape(-1, *sequence.shape[2:])
        preds = [model(flat[i : i + batch_size]).argmax(1) for i in range(0, flat.shape[0], batch_size)]
        return torch.cat(preds).view(sequence.shape[0], sequence.shape[1])
    finally:
        model.train(was_training)


def flip_rate(
    model: torch.nn.Module,
    x: torch.Tensor,
    name: str,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> float:
    """Flip probability of ``model`` on the ``name`` sequences of images ``x``."""
    seq = perturbation_sequence(x, name, generator=generator)
    return flip_probability(sequence_predictions(model, seq, batch_size=batch_size), noise=PERTURBATIONS[name].noise)
