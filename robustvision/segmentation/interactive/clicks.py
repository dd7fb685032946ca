"""Clicks: the click record, the disk encoding fed to the networks, and RITM's simulated user.

The same code serves the NoC evaluation, the training-time click simulation and the annotation tool (a
human's clicks are :class:`Click` objects too), so the protocol cannot drift between them.

References:
    Sofiiuk et al., "Reviving Iterative Training with Mask Guidance for Interactive Segmentation" (RITM),
    arXiv:2102.06583 -- ``isegm/inference/clicker.py`` (evaluation clicker) and ``get_next_points``
    (training-time sampler), both reproduced here with their exact semantics: 1-px zero padding before the
    L2 distance transform, already-clicked pixels excluded, ties to the first pixel in scan order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

#: Disk radius (pixels) of the click encoding; EdgeFlow and RITM use ``DistMaps(norm_radius=5, use_disks=True)``.
DISK_RADIUS = 5
#: Probability threshold that turns a prediction into a mask in the RITM protocol.
PRED_THRESHOLD = 0.49


@dataclass(frozen=True)
class Click:
    """One user click.

    Attributes:
        y: row of the clicked pixel (0-based).
        x: column of the clicked pixel (0-based).
        is_positive: True for a foreground (left) click, False for a background (right) click.
    """

    y: int
    x: int
    is_positive: bool

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form ``{"y": .., "x": .., "is_positive": ..}`` (the annotation tool's wire format)."""
        return {"y": int(self.y), "x": int(self.x), "is_positive": bool(self.is_positive)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Click:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed record."""
        try:
            return cls(y=int(data["y"]), x=int(data["x"]), is_positive=bool(data["is_positive"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"a click needs integer 'y', 'x' and boolean 'is_positive', got {data!r}") from err


def check_clicks(clicks: Iterable[Click], height: int, width: int) -> list[Click]:
    """Validate clicks against an image size.

    Args:
        clicks: the clicks, in the order they were made.
        height: image height.
        width: image width.

    Returns:
        The clicks as a list.

    Raises:
        TypeError: an element is not a :class:`Click`.
        ValueError: a click lies outside the ``height x width`` image.
    """
    out = []
    for i, c in enumerate(clicks):
        if not isinstance(c, Click):
            raise TypeError(f"click {i} must be a Click(y, x, is_positive), got {type(c).__name__}")
        if not (0 <= c.y < height and 0 <= c.x < width):
            raise ValueError(
                f"click {i} at (y={c.y}, x={c.x}) lies outside the {height}x{width} image "
                f"(valid y in [0, {height - 1}], x in [0, {width - 1}])"
            )
        out.append(c)
    return out


def clicks_to_points(clicks_batch: Sequence[Sequence[Click]], device: str | torch.device = "cpu") -> torch.Tensor:
    """Pack click lists into the padded tensor used by :func:`disk_maps`.

    Args:
        clicks_batch: one click list per image.
        device: where the tensor lives.

    Returns:
        ``B x N x 3`` float tensor of ``(y, x, label)`` with label 1 positive, 0 negative and -1 padding
        (``N`` is the longest list, at least 1).
    """
    n = max([len(c) for c in clicks_batch] + [1])
    pts = torch.full((len(clicks_batch), n, 3), -1.0, device=device)
    for b, clicks in enumerate(clicks_batch):
        for i, c in enumerate(clicks):
            pts[b, i] = torch.tensor([c.y, c.x, 1.0 if c.is_positive else 0.0])
    return pts


def disk_maps(points: torch.Tensor, height: int, width: int, radius: float = DISK_RADIUS) -> torch.Tensor:
    """Encode clicks as binary disks, one channel for positives and one for negatives.

    A pixel is 1 in the positive channel when its squared distance to some positive click is at most
    ``radius**2`` (RITM ``DistMaps(use_disks=True)``), likewise for negatives.

    Args:
        points: ``B x N x 3`` tensor of ``(y, x, label)``; label 1 positive, 0 negative, -1 padding.
        height: output height.
        width: output width.
        radius: disk radius in pixels.

    Returns:
        ``B x 2 x H x W`` float32 tensor (channel 0 positive, channel 1 negative).

    Example:
        >>> pts = torch.tensor([[[10.0, 10.0, 1.0]]])
        >>> int(disk_maps(pts, 32, 32, radius=5)[0, 0].sum())  # lattice points in a radius-5 disk
        81
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be B x N x 3 (y, x, label), got shape {tuple(points.shape)}")
    b = points.shape[0]
    out = torch.zeros(b, 2, height, width, device=points.device)
    r2 = radius * radius
    # Each disk is drawn in its own window: the same float32 distance test as over the whole map, without an
    # N x H x W distance tensor (at 400 px and 20 clicks that was several milliseconds of every click).
    for bi, row in enumerate(points.detach().float().cpu().tolist()):
        for y, x, label in row:
            if label not in (0.0, 1.0):
                continue
            y0, y1 = max(math.floor(y - radius) - 1, 0), min(math.ceil(y + radius) + 2, height)
            x0, x1 = max(math.floor(x - radius) - 1, 0), min(math.ceil(x + radius) + 2, width)
            if y0 >= y1 or x0 >= x1:
                continue
            ys = torch.arange(y0, y1, device=points.device, dtype=torch.float32).view(-1, 1)
            xs = torch.arange(x0, x1, device=points.device, dtype=torch.float32).view(1, -1)
            py = torch.tensor(y, device=points.device, dtype=torch.float32)
            px = torch.tensor(x, device=points.device, dtype=torch.float32)
            inside = (ys - py) ** 2 + (xs - px) ** 2 <= r2
            window = out[bi, 0 if label == 1.0 else 1, y0:y1, x0:x1]
            window.masked_fill_(inside, 1.0)
    return out


def click_maps(clicks: Sequence[Click], height: int, width: int, radius: float = DISK_RADIUS) -> np.ndarray:
    """The disk encoding of one image's clicks as a ``2 x H x W`` float32 array (positive, negative)."""
    check_clicks(clicks, height, width)
    return disk_maps(clicks_to_points([list(clicks)]), height, width, radius)[0].numpy()


def _padded_dt(mask: np.ndarray) -> np.ndarray:
    """L2 distance transform of ``mask`` with a 1-px zero border, as RITM does (border pixels get distance 1)."""
    padded = np.pad(mask.astype(np.uint8), ((1, 1), (1, 1)), "constant")
    return cv2.distanceTransform(padded, cv2.DIST_L2, 0)[1:-1, 1:-1]


def error_masks(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """False-negative and false-positive masks (``gt & ~pred``, ``~gt & pred``), restricted to ``valid`` pixels."""
    fn = gt & ~pred
    fp = ~gt & pred
    if valid is not None:
        fn &= valid
        fp &= valid
    return fn, fp


class Clicker:
    """RITM's simulated user: each click goes to the error pixel farthest from the error boundary.

    The false-negative and false-positive regions are distance-transformed (1-px zero padding, L2); the
    click is positive when the largest FN distance exceeds the largest FP distance, negative otherwise,
    at the first pixel (scan order) attaining that maximum. Pixels already clicked are excluded.

    Args:
        gt_mask: ``H x W`` ground truth: boolean (True = object), or integers with 0 background,
            ``ignore_value`` ignored and any other positive value object (robustvision's 0/1/255 masks).
        ignore_mask: optional ``H x W`` boolean mask of pixels to ignore (e.g. GrabCut's 128 band).
        ignore_value: the integer value in ``gt_mask`` that marks ignored pixels (255 in robustvision's mask
            contract, so an ``int64`` mask with 0/1/255 works directly).

    Example:
        >>> gt = np.zeros((9, 9), bool); gt[2:7, 2:7] = True
        >>> Clicker(gt).make_next_click(np.zeros((9, 9), bool))
        Click(y=4, x=4, is_positive=True)
    """

    def __init__(self, gt_mask: np.ndarray, ignore_mask: np.ndarray | None = None, ignore_value: int = 255) -> None:
        gt = np.asarray(gt_mask)
        if gt.ndim != 2:
            raise ValueError(f"gt_mask must be H x W, got shape {gt.shape}")
        if gt.dtype == bool:
            self.gt = gt.copy()
            valid = np.ones_like(gt, dtype=bool)
        else:
            valid = gt != ignore_value
            self.gt = (gt > 0) & valid
        if ignore_mask is not None:
            ignore_mask = np.asarray(ignore_mask, dtype=bool)
            if ignore_mask.shape != gt.shape:
                raise ValueError(f"ignore_mask shape {ignore_mask.shape} differs from gt_mask shape {gt.shape}")
            valid &= ~ignore_mask
        self.valid = valid
        self.clicks: list[Click] = []
        self._not_clicked = np.ones(gt.shape, dtype=bool)

    @property
    def shape(self) -> tuple[int, int]:
        return self.gt.shape  # type: ignore[return-value]

    def reset(self) -> None:
        """Forget all clicks."""
        self.clicks = []
        self._not_clicked[:] = True

    def next_click(self, pred_mask: np.ndarray) -> Click:
        """The click the simulated user would make given the current binary prediction (not recorded)."""
        pred = np.asarray(pred_mask)
        if pred.shape != self.gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from the ground-truth shape {self.gt.shape}")
        fn, fp = error_masks(pred.astype(bool), self.gt, self.valid)
        fn_dt = _padded_dt(fn) * self._not_clicked
        fp_dt = _padded_dt(fp) * self._not_clicked
        fn_max, fp_max = float(fn_dt.max()), float(fp_dt.max())
        is_positive = fn_max > fp_max
        dt, best = (fn_dt, fn_max) if is_positive else (fp_dt, fp_max)
        ys, xs = np.where(dt == best)
        return Click(int(ys[0]), int(xs[0]), bool(is_positive))

    def add_click(self, click: Click) -> None:
        """Record a click (a human's or the simulated one)."""
        check_clicks([click], *self.gt.shape)
        self.clicks.append(click)
        self._not_clicked[click.y, click.x] = False

    def make_next_click(self, pred_mask: np.ndarray) -> Click:
        """Choose the next click for ``pred_mask`` and record it."""
        click = self.next_click(pred_mask)
        self.add_click(click)
        return click


def sample_next_click(
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Click | None:
    """RITM's training-time next click (``get_next_points``): random, in the worse error region's core.

    Of the FN and FP regions (1-px padded L2 distance transforms) the one with the larger maximum distance
    is chosen; the click is drawn uniformly among its pixels whose distance exceeds half that maximum.

    Args:
        pred_mask: ``H x W`` boolean prediction (threshold the probabilities at 0.49 first).
        gt_mask: ``H x W`` boolean ground truth.
        valid: optional ``H x W`` boolean mask of pixels that count.
        generator: the random source.

    Returns:
        The click, or ``None`` when the prediction has no error.
    """
    fn, fp = error_masks(pred_mask.astype(bool), gt_mask.astype(bool), valid)
    fn_dt, fp_dt = _padded_dt(fn), _padded_dt(fp)
    fn_max, fp_max = float(fn_dt.max()), float(fp_dt.max())
    if max(fn_max, fp_max) <= 0:
        return None
    is_positive = fn_max > fp_max
    dt, best = (fn_dt, fn_max) if is_positive else (fp_dt, fp_max)
    ys, xs = np.where(dt > best / 2)
    i = int(torch.randint(len(ys), (1,), generator=generator))
    return Click(int(ys[i]), int(xs[i]), bool(is_positive))


def iou(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Intersection over union of two boolean masks over ``valid`` pixels (1.0 when both are empty)."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    if valid is not None:
        pred, gt = pred & valid, gt & valid
    union = np.logical_or(pred, gt).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, gt).sum() / union)
