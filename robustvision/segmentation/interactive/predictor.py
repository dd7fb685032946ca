"""Predictors: one interface for every interactive segmenter, learned or classic.

A predictor holds one image at a time. :meth:`Predictor.set_image` does the per-image work once (for the
networks: the image tensor, its crops and the click-independent stem features are cached); each
:meth:`Predictor.predict` call is one interaction: the full click list so far in, an ``H x W`` float32
probability map out. The annotation tool and the NoC benchmark drive the same objects.

Each predictor keeps the object's one undo history (:attr:`Predictor.history`, a
:class:`~robustvision.segmentation.interactive.history.ClickHistory`): one
:class:`~robustvision.segmentation.interactive.history.Step` per answered click, holding the map shown and what
the next click continues from. The annotation tool's undo/redo moves that history's cursor; it keeps no list of
its own.

Learned predictors follow RITM's inference protocol (``isegm/inference/predictors/base.py`` with the
``ZoomIn`` transform): after the first ``skip_clicks`` clicks the network sees a crop around the current
object (prediction + positive clicks, expanded 1.4x, at least ``min_crop`` px) resized to ``target_size``;
the crop is kept while the positive clicks stay inside it and its IoU with the new object box is >= 0.5.

Example:
    >>> from robustvision.segmentation.interactive import Click, create_predictor
    >>> import numpy as np
    >>> p = create_predictor("random_walker")
    >>> img = np.zeros((40, 40, 3), np.uint8); img[10:30, 10:30] = 200
    >>> p.set_image(img)
    >>> prob = p.predict([Click(20, 20, True)])
    >>> prob.shape, bool(prob[20, 20] > 0.5), bool(prob[2, 2] < 0.5)
    ((40, 40), True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustvision.registry import Registry
from robustvision.runtime import resolve_device
from robustvision.segmentation.interactive.clicks import DISK_RADIUS, PRED_THRESHOLD, Click, check_clicks, disk_maps
from robustvision.segmentation.interactive.history import Box, ClickHistory, Step

#: Registry of interactive predictors; builders take ``(checkpoint=None, device="cpu", **kwargs)``.
PREDICTORS: Registry[Predictor] = Registry("interactive predictor")

#: Where the shipped default checkpoints live (``<name>.safetensors`` + ``<name>.json`` model card).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# The zoom-in region follows the previous mask at 0.5 (RITM's ZoomIn uses PRED_THRESHOLD, 0.49); the published
# NoC figures of the shipped checkpoints were measured with 0.5, so it stays until they are measured again.
ZOOM_THRESHOLD = 0.5


def to_image_tensor(image: object, name: str = "image") -> torch.Tensor:
    """Convert an image to the package contract: ``3 x H x W`` float32 in [0, 1].

    Accepts ``H x W x 3`` uint8 (numpy or torch, e.g. from PIL/OpenCV-RGB), ``H x W`` uint8 grayscale,
    or a ``3 x H x W`` float tensor/array with values in [0, 1].

    Raises:
        TypeError: not an array or tensor, or a dtype that is neither uint8 nor floating point.
        ValueError: a shape that is none of the above, or float values outside [0, 1] / non-finite.
    """
    if isinstance(image, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(image))
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(image).__name__}")
    if t.dtype == torch.uint8:
        if t.dim() == 2:
            t = t.unsqueeze(-1).expand(-1, -1, 3)
        if t.dim() != 3 or t.shape[-1] != 3:
            raise ValueError(f"a uint8 {name} must be H x W x 3 (RGB) or H x W, got shape {tuple(t.shape)}")
        t = t.permute(2, 0, 1).float() / 255.0
    elif t.is_floating_point():
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"a float {name} must be 3 x H x W with values in [0, 1], got shape {tuple(t.shape)}")
        t = t.float()
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        lo, hi = float(t.min()), float(t.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"a float {name} must have values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
        t = t.clamp(0, 1)
    else:
        raise TypeError(f"{name} must be uint8 (H x W x 3) or float (3 x H x W in [0, 1]), got dtype {t.dtype}")
    if t.shape[1] < 2 or t.shape[2] < 2:
        raise ValueError(f"{name} is too small: {tuple(t.shape[1:])}")
    return t.contiguous()


def check_prev_mask(prev_mask: object, height: int, width: int) -> np.ndarray:
    """Validate a previous mask/probability map: ``H x W`` matching the image, values in [0, 1]."""
    m = prev_mask.detach().cpu().numpy() if isinstance(prev_mask, torch.Tensor) else np.asarray(prev_mask)
    if m.shape != (height, width):
        raise ValueError(f"prev_mask has shape {m.shape} but the image is {height}x{width}")
    m = m.astype(np.float32)
    if m.size and (not np.isfinite(m).all() or m.min() < 0 or m.max() > 1):
        raise ValueError("prev_mask must hold probabilities (or a 0/1 mask) in [0, 1]")
    return m


class Predictor:
    """Base of every interactive segmenter.

    Subclasses implement :meth:`_predict` (and optionally :meth:`_on_set_image`); predictors that carry more
    than the probabilities from one click to the next (the networks' edge map and zoom region) implement
    :meth:`_step` instead. The base validates inputs, so every predictor rejects bad images, clicks outside the
    image and mis-sized masks alike, and it records every answer in :attr:`history`.

    Attributes:
        history: the object's undo history; :meth:`predict` continues from its step whose clicks are a strict
            prefix of the new ones (after an undo: the step shown) and records the answer after it, dropping the
            undone steps. Undo and redo move its cursor (:meth:`ClickHistory.undo` / :meth:`ClickHistory.redo`).
    """

    name: str = "predictor"

    def __init__(self) -> None:
        self._image: torch.Tensor | None = None
        self.history = ClickHistory()

    @property
    def image(self) -> torch.Tensor:
        """The current image, ``3 x H x W`` float32 in [0, 1]."""
        if self._image is None:
            raise RuntimeError("no image set: call set_image(image) before predict(clicks)")
        return self._image

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the current image."""
        return int(self.image.shape[1]), int(self.image.shape[2])

    def image_uint8(self) -> np.ndarray:
        """The current image as ``H x W x 3`` uint8 RGB."""
        return (self.image.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)

    def set_image(self, image: object) -> None:
        """Load an image and do its per-image work once.

        Args:
            image: ``3 x H x W`` float32 in [0, 1] (tensor or array) or ``H x W x 3`` uint8 RGB.
        """
        self._image = to_image_tensor(image)
        self.reset()
        self._on_set_image()

    def reset(self) -> None:
        """Forget the per-object interaction state, its history included (start a new object on the same image)."""
        self.history.clear()

    def _on_set_image(self) -> None:
        """Hook for per-image caching."""
        return None

    def predict(self, clicks: Sequence[Click], prev_mask: object | None = None) -> np.ndarray:
        """One interaction: all clicks so far in, a probability map out.

        The answer continues from the :attr:`history` step whose clicks are a strict prefix of ``clicks`` (the
        steps after it are dropped) and is recorded after it, so a shorter list (undo) or the step shown after
        :meth:`ClickHistory.undo` gives the same map as the same clicks without the detour.

        Args:
            clicks: every click on the current object, in order (the last one is the newest).
            prev_mask: optional ``H x W`` previous probabilities or 0/1 mask (e.g. a mask loaded from disk); when
                given it replaces the history step's map as what this click continues from.

        Returns:
            ``H x W`` float32 foreground probabilities in [0, 1]; threshold at 0.49 (RITM) for a mask. The array
            is the history's record, so it is read-only (copy it to edit it).
        """
        h, w = self.image_size
        clicks = check_clicks(clicks, h, w)
        prev = None if prev_mask is None else check_prev_mask(prev_mask, h, w)
        if not clicks:
            return np.zeros((h, w), np.float32) if prev is None else prev.copy()
        step = self._step(clicks, prev, self.history.continue_from(clicks))
        probs = np.clip(step.probs.astype(np.float32, copy=False), 0.0, 1.0)
        probs.setflags(write=False)
        self.history.push(Step(step.clicks, probs, step.aux, step.roi))
        return probs

    def _step(self, clicks: list[Click], prev_mask: np.ndarray | None, prev: Step | None) -> Step:
        """The answer to validated, non-empty ``clicks`` as a history step (its ``probs`` may be unclipped).

        The default passes the caller's mask, else ``prev``'s probabilities, to :meth:`_predict`.

        Args:
            clicks: the clicks.
            prev_mask: the caller's previous mask, if any.
            prev: the history step these clicks continue from, if any.
        """
        if prev_mask is None and prev is not None:
            prev_mask = prev.probs
        return Step(tuple(clicks), self._predict(clicks, prev_mask))

    def _predict(self, clicks: list[Click], prev_mask: np.ndarray | None) -> np.ndarray:
        """Probabilities for validated, non-empty ``clicks``, continuing from ``prev_mask`` when given."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _predict nor _step")


# --------------------------------------------------------------------------------------------- zoom-in


def _bbox(mask: np.ndarray) -> Box:
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    rmin, rmax = np.where(rows)[0][[0, -1]]
    cmin, cmax = np.where(cols)[0][[0, -1]]
    return int(rmin), int(rmax), int(cmin), int(cmax)


def _expand_bbox(box: Box, ratio: float, min_size: int) -> Box:
    rmin, rmax, cmin, cmax = box
    rc, cc = 0.5 * (rmin + rmax), 0.5 * (cmin + cmax)
    h = max(ratio * (rmax - rmin + 1), min_size)
    w = max(ratio * (cmax - cmin + 1), min_size)
    return int(round(rc - 0.5 * h)), int(round(rc + 0.5 * h)), int(round(cc - 0.5 * w)), int(round(cc + 0.5 * w))


def object_roi(pred_mask: np.ndarray, clicks: Sequence[Click], expansion: float, min_crop: int) -> Box:
    """RITM ``get_object_roi``: box of the mask plus positive clicks, expanded, clamped to the image."""
    m = pred_mask.copy()
    for c in clicks:
        if c.is_positive:
            m[c.y, c.x] = True
    rmin, rmax, cmin, cmax = _expand_bbox(_bbox(m), expansion, min_crop)
    h, w = m.shape
    return max(rmin, 0), min(rmax, h - 1), max(cmin, 0), min(cmax, w - 1)


def box_iou(a: Box, b: Box) -> float:
    """IoU of two inclusive boxes."""
    ih = min(a[1], b[1]) - max(a[0], b[0]) + 1
    iw = min(a[3], b[3]) - max(a[2], b[2]) + 1
    inter = max(ih, 0) * max(iw, 0)
    area = (a[1] - a[0] + 1) * (a[3] - a[2] + 1) + (b[1] - b[0] + 1) * (b[3] - b[2] + 1) - inter
    return inter / area


def _clicks_inside(box: Box, clicks: Sequence[Click]) -> bool:
    return all(box[0] <= c.y < box[1] and box[2] <= c.x < box[3] for c in clicks if c.is_positive)


# ------------------------------------------------------------------------------------ learned models


@dataclass
class InferenceConfig:
    """How a network predictor runs (RITM "cvpr" defaults scaled to a small CPU model).

    Attributes:
        zoom_in: crop around the object after ``skip_clicks`` clicks.
        target_size: longest side of the zoomed crop fed to the network.
        max_side: longest side of the whole image fed to the network before zooming (downscaled if larger).
        skip_clicks: clicks answered on the whole image before zooming starts.
        expansion: box expansion ratio of the zoom crop.
        min_crop: smallest crop side in image pixels.
        recompute_iou: re-centre the crop when its IoU with the current object box falls below this.
        with_flip: average with the horizontally flipped prediction (RITM test-time flip; doubles latency).
        disk_radius: click disk radius at network resolution.
        optimize: run an inference-only copy of the network with its batch norms folded into the convolutions
            (:func:`~robustvision.segmentation.interactive.fastpath.optimize_for_inference`; the same probabilities
            up to float rounding, fewer operations per click). ``False`` runs the network as trained. The copy is
            made when the predictor is built: later changes to the network's weights need a new predictor.
    """

    zoom_in: bool = True
    target_size: int = 320
    max_side: int = 480
    skip_clicks: int = 1
    expansion: float = 1.4
    min_crop: int = 100
    recompute_iou: float = 0.5
    with_flip: bool = False
    disk_radius: float = DISK_RADIUS
    optimize: bool = True


@dataclass
class _Cache:
    key: tuple[Any, ...] | None = None
    value: Any = None
    hits: int = 0
    misses: int = 0


class NetPredictor(Predictor):
    """Runs an interactive segmentation network with RITM's zoom-in protocol and an undo-aware history.

    The network contract (what :class:`~robustvision.segmentation.interactive.model.EdgeFlowNet` provides):

    - ``net.encode_image(image)`` -> a click-independent cache for a ``B x 3 x h x w`` [0, 1] image;
    - ``net.decode(cache, coord_features)`` -> dict with ``"instances"`` (fine mask logits) and, for
      edge-guided models, ``"edges"`` logits, each ``B x 1 x h x w``;
    - ``net.uses_edge``: whether the third click channel carries the previous edge map (EdgeFlow) or the
      previous mask (RITM-style ablation).

    Each :attr:`~Predictor.history` step keeps, besides the map shown, the map the next click feeds back
    (``aux``: the predicted edge map, or the unclipped probabilities for mask models) and the zoom region
    (``roi``). Calling :meth:`predict` with a click list that extends an earlier one continues from that step,
    so undo (a shorter list, or moving the history's cursor) and redo need no extra network calls.

    Args:
        net: the network.
        device: where it runs.
        config: inference settings.
        name: the predictor's name.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        device: str | torch.device = "cpu",
        config: InferenceConfig | None = None,
        *,
        name: str = "net",
    ) -> None:
        super().__init__()
        self.device = resolve_device(device)
        self.config = config or InferenceConfig()
        net = net.to(self.device).eval()
        if self.config.optimize:
            from robustvision.segmentation.interactive.fastpath import optimize_for_inference

            net = optimize_for_inference(net)
        self.net = net
        self.name = name
        self._cache = _Cache()

    def _on_set_image(self) -> None:
        self._cache = _Cache()
        # The whole-image view is what the first click always needs: build its cache now, once per image.
        self._encoded(None)

    def _net_size(self, roi: Box | None) -> tuple[int, int]:
        h, w = self.image_size
        if roi is not None:
            h, w = roi[1] - roi[0] + 1, roi[3] - roi[2] + 1
            scale = self.config.target_size / max(h, w)
        else:
            scale = min(1.0, self.config.max_side / max(h, w))
        # Multiples of 8 keep the strided backbone's feature maps aligned with the input.
        return max(8, int(round(h * scale / 8)) * 8), max(8, int(round(w * scale / 8)) * 8)

    def _view(self, full: torch.Tensor, roi: Box | None, size: tuple[int, int]) -> torch.Tensor:
        """Crop ``1 x C x H x W`` to ``roi`` and resize to ``size`` (bilinear, align_corners=True as RITM)."""
        if roi is not None:
            full = full[:, :, roi[0] : roi[1] + 1, roi[2] : roi[3] + 1]
        if tuple(full.shape[-2:]) == size:
            return full
        return F.interpolate(full, size=size, mode="bilinear", align_corners=True)

    @torch.inference_mode()
    def _encoded(self, roi: Box | None) -> Any:
        key = (roi, self._net_size(roi))
        if self._cache.key == key:
            self._cache.hits += 1
            return self._cache.value
        self._cache.misses += 1
        x = self._view(self.image.unsqueeze(0).to(self.device), roi, key[1])
        batch = torch.cat([x, x.flip(-1)]) if self.config.with_flip else x
        self._cache.key, self._cache.value = key, self.net.encode_image(batch)
        return self._cache.value

    def _choose_roi(self, clicks: list[Click], prev: Step | None, prev_probs: np.ndarray | None) -> Box | None:
        cfg = self.config
        if not cfg.zoom_in or len(clicks) <= cfg.skip_clicks or prev_probs is None:
            return None
        pred = prev_probs > ZOOM_THRESHOLD
        if not pred.any():
            return None
        current = object_roi(pred, clicks, cfg.expansion, cfg.min_crop)
        old = prev.roi if prev is not None else None
        if old is None or not _clicks_inside(old, clicks) or box_iou(current, old) < cfg.recompute_iou:
            return current
        return old

    @torch.inference_mode()
    def _step(self, clicks: list[Click], prev_mask: np.ndarray | None, prev: Step | None) -> Step:
        h, w = self.image_size
        prev_probs = prev_mask if prev_mask is not None else (prev.probs if prev is not None else None)
        if getattr(self.net, "uses_edge", False):
            if prev is not None and prev_mask is None:
                aux_full = prev.aux
            elif prev_mask is not None:
                aux_full = mask_boundary(prev_mask > PRED_THRESHOLD)
            else:
                aux_full = np.zeros((h, w), np.float32)
        elif prev_mask is not None:
            aux_full = prev_mask
        else:
            aux_full = prev.aux if prev is not None else np.zeros((h, w), np.float32)

        roi = self._choose_roi(clicks, prev, prev_probs)
        size = self._net_size(roi)
        cache = self._encoded(roi)
        aux = self._view(torch.from_numpy(np.ascontiguousarray(aux_full))[None, None].to(self.device), roi, size)
        oy, ox = (roi[0], roi[2]) if roi is not None else (0, 0)
        rh, rw = (roi[1] - roi[0] + 1, roi[3] - roi[2] + 1) if roi is not None else (h, w)
        sy, sx = (size[0] - 1) / max(rh - 1, 1), (size[1] - 1) / max(rw - 1, 1)  # align_corners=True mapping
        net_clicks = []
        for c in clicks:
            y, x = (c.y - oy) * sy, (c.x - ox) * sx
            if 0 <= y <= size[0] - 1 and 0 <= x <= size[1] - 1:  # RITM drops clicks outside the crop
                net_clicks.append((y, x, 1.0 if c.is_positive else 0.0))
        pts = torch.tensor([net_clicks], dtype=torch.float32, device=self.device).view(1, -1, 3)
        maps = disk_maps(pts, size[0], size[1], self.config.disk_radius)
        coord = torch.cat([aux, maps], dim=1)
        if self.config.with_flip:
            coord = torch.cat([coord, coord.flip(-1)])
        out = self.net.decode(cache, coord)
        probs = torch.sigmoid(out["instances"])
        edge = torch.sigmoid(out["edges"]) if "edges" in out else None
        if self.config.with_flip:
            probs = 0.5 * (probs[:1] + probs[1:].flip(-1))
            edge = None if edge is None else 0.5 * (edge[:1] + edge[1:].flip(-1))
        probs_full = self._paste(probs, roi)
        edge_full = self._paste(edge, roi) if edge is not None else probs_full
        return Step(tuple(clicks), probs_full, edge_full if self.net.uses_edge else probs_full, roi)

    def _paste(self, t: torch.Tensor, roi: Box | None) -> np.ndarray:
        """Resize network-resolution ``1 x 1 x h x w`` output back into a full-image ``H x W`` map."""
        h, w = self.image_size
        if roi is None:
            return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=True)[0, 0].cpu().numpy()
        rh, rw = roi[1] - roi[0] + 1, roi[3] - roi[2] + 1
        full = np.zeros((h, w), np.float32)
        crop = F.interpolate(t, size=(rh, rw), mode="bilinear", align_corners=True)[0, 0].cpu().numpy()
        full[roi[0] : roi[1] + 1, roi[2] : roi[3] + 1] = crop
        return full

    @property
    def cache_stats(self) -> dict[str, int]:
        """How often the per-view image cache was reused (``hits``) or rebuilt (``misses``)."""
        return {"hits": self._cache.hits, "misses": self._cache.misses}


def mask_boundary(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """A float ``H x W`` band of ``width`` px around a binary mask's boundary (the edge target's shape)."""
    import cv2

    m = mask.astype(np.uint8)
    k = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return (cv2.dilate(m, k) - cv2.erode(m, k)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- registry


def list_predictors(pattern: str = "*", **filters: Any) -> list[str]:
    """Names of the registered predictors (``edgeflow``, ``edgeflow_noedge``, ``grabcut``, ``random_walker``)."""
    _import_builtin()
    return PREDICTORS.list(pattern, **filters)


def create_predictor(
    name: str, checkpoint: str | Path | None = None, device: str | torch.device = "cpu", **kwargs: Any
) -> Predictor:
    """Build a predictor by name.

    Args:
        name: a registered name (see :func:`list_predictors`).
        checkpoint: for learned predictors, a ``.safetensors`` checkpoint (its ``.json`` model card beside it);
            ``None`` uses the checkpoint shipped in ``robustvision/segmentation/interactive/weights``.
            Classic predictors reject a checkpoint.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        **kwargs: predictor settings (e.g. :class:`InferenceConfig` fields for learned ones).

    Returns:
        The predictor; call ``set_image`` then ``predict``.

    Raises:
        UnknownNameError: an unknown name (with close-name hints).
        FileNotFoundError: the checkpoint is missing.
    """
    _import_builtin()
    return PREDICTORS.create(name, checkpoint=checkpoint, device=device, **kwargs)


def _import_builtin() -> None:
    # The classic baselines and the network builders register themselves on import.
    from robustvision.segmentation.interactive import baselines  # noqa: F401


def _net_builder(variant: str) -> Callable[..., Predictor]:
    def build(checkpoint: str | Path | None = None, device: str | torch.device = "cpu", **kwargs: Any) -> Predictor:
        path = Path(checkpoint) if checkpoint is not None else WEIGHTS_DIR / f"{variant}.safetensors"
        if not path.is_file():
            if checkpoint is None:
                raise FileNotFoundError(
                    f"the default {variant} checkpoint is not shipped at {path}; train one with "
                    f"`robustvision iseg train` and pass --checkpoint"
                )
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        from robustvision.segmentation.interactive.model import load_edgeflow

        net, card = load_edgeflow(path, device="cpu")
        if checkpoint is None and bool(card.get("model", {}).get("edge_flow", True)) != (variant == "edgeflow"):
            raise ValueError(f"{path} does not hold a {variant} model")
        settings = dict(card.get("inference", {}))
        settings.update(kwargs)
        known = set(InferenceConfig.__dataclass_fields__)
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(f"unknown inference setting(s) {unknown}; known: {sorted(known)}")
        return NetPredictor(net, device, InferenceConfig(**settings), name=variant)

    return build


PREDICTORS.add("edgeflow", _net_builder("edgeflow"), kind="learned")
PREDICTORS.add("edgeflow_noedge", _net_builder("edgeflow_noedge"), kind="learned")
