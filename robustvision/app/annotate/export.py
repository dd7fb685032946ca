"""Exports of a project's annotations: COCO JSON (polygons or RLE), PNG masks, LabelMe JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from robustvision.app.annotate.geometry import bbox_of, mask_to_rle, polygon_area, polygons_to_mask
from robustvision.app.annotate.labels import Label, default_color
from robustvision.fileio import atomic_write_text

ExportFormat = Literal["coco", "png", "labelme"]
EXPORT_FORMATS = ("coco", "png", "labelme")


def _annotated(project) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for record in project.list_images():
        if record.status == "error":
            continue
        data = project.annotation(record.name)
        if data["objects"]:
            out.append((record.name, data))
    return out


def _label_table(project, images) -> dict[int, Label]:
    table = {lb.index: lb for lb in project.labels}
    for _, data in images:
        for obj in data["objects"]:
            idx = int(obj["label"])
            table.setdefault(idx, Label(idx, f"class{idx}", default_color(idx)))
    return table


def export_coco(project, out: Path, rle: bool = False) -> Path:
    """One COCO instances file; segmentation as polygons, or as compressed RLE when ``rle``."""
    images = _annotated(project)
    labels = _label_table(project, images)
    coco: dict[str, Any] = {
        "info": {"description": f"robustvision annotations of {project.root.name}", "date_created": time.ctime()},
        "images": [],
        "annotations": [],
        "categories": [{"id": lb.index, "name": lb.name, "supercategory": "object"} for lb in labels.values()],
    }
    ann_id = 1
    for image_id, (name, data) in enumerate(images, 1):
        h, w = data["height"], data["width"]
        coco["images"].append({"id": image_id, "file_name": name, "width": w, "height": h})
        for obj in data["objects"]:
            polys = obj["polygons"]
            mask = polygons_to_mask(polys, h, w)
            entry = {
                "id": ann_id,
                "image_id": image_id,
                "category_id": int(obj["label"]),
                "iscrowd": 0,
                "bbox": bbox_of(polys),
                "area": float(mask.sum()) if rle else float(sum(polygon_area(p) for p in polys)),
                "segmentation": mask_to_rle(mask) if rle else [[c for pt in p for c in pt] for p in polys],
                "robustvision_id": obj["id"],
            }
            coco["annotations"].append(entry)
            ann_id += 1
    path = out / ("coco_rle.json" if rle else "coco.json")
    atomic_write_text(path, json.dumps(coco))
    return path


def render_class_mask(data: dict[str, Any]) -> np.ndarray:
    """``H x W`` uint8 class ids (0 = background); later objects are painted over earlier ones."""
    mask = np.zeros((data["height"], data["width"]), np.uint8)
    for obj in data["objects"]:
        mask[polygons_to_mask(obj["polygons"], data["height"], data["width"]) > 0] = int(obj["label"])
    return mask


def export_png(project, out: Path) -> Path:
    """``masks/<stem>.png`` (grey class ids) and ``masks_color/<stem>.png`` (palette PNG in the label colours)."""
    images = _annotated(project)
    labels = _label_table(project, images)
    palette = [0, 0, 0] * 256
    for lb in labels.values():
        palette[3 * lb.index : 3 * lb.index + 3] = list(lb.color)
    grey_dir, color_dir = out / "masks", out / "masks_color"
    grey_dir.mkdir(parents=True, exist_ok=True)
    color_dir.mkdir(parents=True, exist_ok=True)
    for name, data in images:
        mask = render_class_mask(data)
        stem = Path(name).stem
        Image.fromarray(mask, mode="L").save(grey_dir / f"{stem}.png")
        pal = Image.fromarray(mask, mode="P")
        pal.putpalette(palette)
        pal.save(color_dir / f"{stem}.png")
    return grey_dir


def export_labelme(project, out: Path) -> Path:
    """One LabelMe JSON per image (polygon shapes named by label)."""
    images = _annotated(project)
    labels = _label_table(project, images)
    folder = out / "labelme"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in images:
        shapes = [
            {
                "label": labels[int(obj["label"])].name,
                "points": poly,
                "group_id": None,
                "shape_type": "polygon",
                "flags": {},
            }
            for obj in data["objects"]
            for poly in obj["polygons"]
        ]
        doc = {
            "version": "5.4.1",
            "flags": {},
            "shapes": shapes,
            "imagePath": f"../../{name}",
            "imageData": None,
            "imageHeight": data["height"],
            "imageWidth": data["width"],
        }
        atomic_write_text(folder / f"{Path(name).stem}.json", json.dumps(doc, indent=1))
    return folder


def export_project(project, fmt: str, out: str | Path | None = None, rle: bool = False) -> Path:
    """Export to ``out`` (default ``DIR/annotations/export``) in ``coco``, ``png`` or ``labelme`` format."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    target = Path(out) if out else project.annotations_dir / "export"
    target.mkdir(parents=True, exist_ok=True)
    if fmt == "coco":
        return export_coco(project, target, rle=rle)
    if fmt == "png":
        return export_png(project, target)
    return export_labelme(project, target)
