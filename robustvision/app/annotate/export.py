"""Exports of a project's annotations: COCO JSON (polygons or RLE), PNG masks, LabelMe JSON."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from robustvision.app.annotate.geometry import bbox_of, check_polygons, mask_to_rle, polygon_area, polygons_to_mask
from robustvision.app.annotate.labels import Label, default_color
from robustvision.fileio import atomic_write_text

ExportFormat = Literal["coco", "png", "labelme"]
EXPORT_FORMATS = ("coco", "png", "labelme")


def _annotated(project) -> list[tuple[str, dict[str, Any]]]:
    """The annotated images with their checked annotations; an invalid annotation file stops the export.

    Images that cannot be read and have no annotation file are skipped (they have nothing to export); a saved
    annotation that cannot be exported is an error naming its file, never silently dropped.
    """
    out, problems = [], []
    for record in project.list_images():
        if record.status == "error":
            try:
                saved = project.store.read(record.name)["objects"]
            except ValueError as err:
                problems.append(str(err))
                continue
            if saved:
                problems.append(f"{record.name} has {len(saved)} saved object(s) but {record.error}")
            continue
        data = project.annotation(record.name)
        try:
            data = {**data, "objects": [_checked_object(obj, data) for obj in data["objects"]]}
        except ValueError as err:
            problems.append(f"annotation file {str(project.store.path(record.name))!r}: {err}")
            continue
        if data["objects"]:
            out.append((record.name, data))
    if problems:
        raise ValueError("cannot export: " + "; ".join(problems) + " (fix or move these files away)")
    return out


def _checked_object(obj: Any, data: dict[str, Any]) -> dict[str, Any]:
    """One saved object, checked as the editor checks it: an integer label and finite polygons inside the image."""
    if not isinstance(obj, dict):
        raise ValueError(f"an object must be a JSON object, got {type(obj).__name__}")
    where = f"object {obj.get('id', '?')!r}"
    label = obj.get("label")
    if isinstance(label, bool) or not isinstance(label, int) or not 1 <= label <= 254:
        raise ValueError(f"{where} needs an integer 'label' in 1..254, got {label!r}")
    try:
        h, w = int(data["height"]), int(data["width"])
        polygons = check_polygons(obj.get("polygons"), h, w)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err
    return {**obj, "id": str(obj.get("id", "")), "label": label, "polygons": polygons}


def output_stems(names: list[str]) -> dict[str, str]:
    """A file stem per image name, distinct even where names differ only in extension or case.

    ``x.png`` alone exports to ``x``; ``x.jpg`` beside ``x.png`` export to ``x.jpg`` and ``x.png`` (the full name),
    and a clash that remains (say with an image named ``x.jpg.png``) gets ``~2``, ``~3``, ... appended.
    """
    by_stem: dict[str, list[str]] = {}
    for name in names:
        by_stem.setdefault(Path(name).stem.casefold(), []).append(name)
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in sorted(names):
        stem = Path(name).stem if len(by_stem[Path(name).stem.casefold()]) == 1 else name
        candidate, k = stem, 1
        while candidate.casefold() in taken:
            k += 1
            candidate = f"{stem}~{k}"
        taken.add(candidate.casefold())
        out[name] = candidate
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
    atomic_write_text(path, json.dumps(coco, allow_nan=False))
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
    stems = output_stems([name for name, _ in images])
    for name, data in images:
        mask = render_class_mask(data)
        stem = stems[name]
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
    stems = output_stems([name for name, _ in images])
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
            # relative to the JSON file, as LabelMe resolves it
            "imagePath": Path(os.path.relpath(project.root / name, folder.resolve())).as_posix(),
            "imageData": None,
            "imageHeight": data["height"],
            "imageWidth": data["width"],
        }
        atomic_write_text(folder / f"{stems[name]}.json", json.dumps(doc, indent=1, allow_nan=False))
    return folder


def export_project(project, fmt: str, out: str | Path | None = None, rle: bool = False) -> Path:
    """Export to ``out`` (default ``DIR/annotations/export``) in ``coco``, ``png`` or ``labelme`` format."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    target = Path(out) if out else project.annotations_dir / "export"
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"export folder {str(target)!r} is a file; pass a folder to --out")
    target.mkdir(parents=True, exist_ok=True)
    if fmt == "coco":
        return export_coco(project, target, rle=rle)
    if fmt == "png":
        return export_png(project, target)
    return export_labelme(project, target)
