"""Masks <-> polygons <-> COCO RLE, the conversions every export and the polygon editor share."""

from __future__ import annotations

import cv2
import numpy as np

from robustvision.runtime import require_extra

Polygon = list[list[float]]  # [[x, y], ...] in pixel coordinates
MAX_POLYGON_POINTS = 100_000  # per object, all polygons together; a traced 25-Mpx outline has far fewer


def mask_to_polygons(mask: np.ndarray, tolerance: float = 1.0, min_area: float = 4.0) -> list[Polygon]:
    """Outer contours of a binary mask as simplified polygons (Douglas-Peucker, ``tolerance`` px).

    Holes are not represented (a polygon annotation of an object is its outline, as in COCO and LabelMe).
    """
    m = (np.asarray(mask) > 0).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polygons: list[Polygon] = []
    for contour in contours:
        if cv2.contourArea(contour) < min_area and len(contour) < 3:
            continue
        approx = cv2.approxPolyDP(contour, tolerance, True)[:, 0, :]
        if len(approx) < 3:
            continue
        polygons.append([[float(x), float(y)] for x, y in approx])
    polygons.sort(key=lambda p: -polygon_area(p))
    return polygons


def polygon_area(polygon: Polygon) -> float:
    """Shoelace area (pixels)."""
    pts = np.asarray(polygon, dtype=np.float64)
    if len(pts) < 3:
        return 0.0
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def polygons_to_mask(polygons: list[Polygon], height: int, width: int) -> np.ndarray:
    """Rasterise polygons (even-odd free: each filled) into a ``H x W`` uint8 0/1 mask."""
    mask = np.zeros((height, width), np.uint8)
    for poly in polygons:
        if len(poly) >= 3:
            pts = np.round(np.asarray(poly, dtype=np.float64)).astype(np.int32)
            cv2.fillPoly(mask, [pts], 1)
    return mask


def check_polygons(polygons: object, height: int, width: int) -> list[Polygon]:
    """Validate editor input: a list of polygons of >= 3 finite ``[x, y]`` points inside the image."""
    if not isinstance(polygons, list) or not polygons:
        raise ValueError("polygons must be a non-empty list of [[x, y], ...] lists")
    total = sum(len(p) if isinstance(p, list) else 0 for p in polygons)
    if total > MAX_POLYGON_POINTS:
        raise ValueError(f"an object may have at most {MAX_POLYGON_POINTS:,} polygon points, got {total:,}")
    out: list[Polygon] = []
    for poly in polygons:
        if not isinstance(poly, list) or len(poly) < 3:
            raise ValueError("each polygon needs at least 3 points")
        pts = []
        for pt in poly:
            if not isinstance(pt, (list, tuple)) or len(pt) != 2:
                raise ValueError(f"a polygon point must be [x, y], got {pt!r}")
            try:
                x, y = float(pt[0]), float(pt[1])
            except (TypeError, ValueError) as err:
                raise ValueError(f"polygon points must be numbers, got {pt!r}") from err
            if not (np.isfinite(x) and np.isfinite(y)):
                raise ValueError("polygon points must be finite numbers")
            if not (-0.5 <= x <= width + 0.5 and -0.5 <= y <= height + 0.5):
                raise ValueError(f"polygon point ({x:g}, {y:g}) lies outside the {width}x{height} image")
            pts.append([min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)])
        out.append(pts)
    return out


def bbox_of(polygons: list[Polygon]) -> list[float]:
    """COCO ``[x, y, w, h]`` of the polygons."""
    pts = np.concatenate([np.asarray(p, dtype=np.float64) for p in polygons])
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a binary mask (``counts`` as a UTF-8 string), via pycocotools."""
    mask_utils = require_extra("pycocotools.mask", "app")

    rle = mask_utils.encode(np.asfortranarray((np.asarray(mask) > 0).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_to_png_bytes(prob: np.ndarray, threshold: float = 0.49) -> bytes:
    """A ``H x W`` probability map -> 1-bit-looking grey PNG (255 = object) for the browser overlay."""
    ok, buf = cv2.imencode(".png", ((np.asarray(prob) > threshold) * 255).astype(np.uint8))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
