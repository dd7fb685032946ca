"""Car assets, backgrounds, view sets and the rendered car-vs-not-car data set the targets are trained on.

Positives are the car from random poses over real background crops, painted either with its original
materials or a random paint job on the paintable faces (so the models learn the car's shape, not its colour).
Negatives are background-only crops and distractor objects (boxes, spheres, cylinders, ...) rendered the same
way. Backgrounds are ``../shared/data/backgrounds`` when present, otherwise the photos shipped with
scikit-image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustvision.physical.camera import Camera, sample_cameras
from robustvision.physical.mesh import (
    DISTRACTOR_SHAPES,
    Mesh,
    load_face_ids,
    load_mesh,
    make_distractor,
    make_procedural_car,
)
from robustvision.physical.renderer import ViewCache, build_view, render
from robustvision.physical.texture import CubeTexture, load_image, random_cube_colors
from robustvision.runtime import shared_data_dir

__all__ = [
    "CarAssets",
    "ViewSet",
    "load_car_assets",
    "load_backgrounds",
    "random_background",
    "original_texture",
    "make_views",
    "render_views",
    "render_car_dataset",
    "CAMERA_RANGES",
]

# camera ranges of the rendered data sets (model units: the car is 2 long; degrees)
CAMERA_RANGES = {"distance": (1.7, 2.6), "elevation": (5.0, 35.0), "azimuth": (0.0, 360.0), "fov": 60.0}


@dataclass
class CarAssets:
    """A car mesh with its paintable faces, a seed pattern and the seed's edge mask.

    Attributes:
        mesh: the mesh (``mesh.paintable`` set).
        seed: ``(3, H, W)`` seed image in [0, 1] (DAS: ``smile.jpg``).
        edge: ``(1, H, W)`` edge mask in {0, 1} (DAS: ``smile_edge.jpg`` >= 0.5).
        name: where they came from.
    """

    mesh: Mesh
    seed: torch.Tensor
    edge: torch.Tensor
    name: str


def _canny(image: torch.Tensor) -> torch.Tensor:
    from skimage.feature import canny

    gray = image.mean(0).numpy()
    return torch.from_numpy(canny(gray, sigma=2.0).astype(np.float32))[None]


def load_car_assets(
    mesh: str | Path | None = None,
    faces: str | Path | None = None,
    seed_texture: str | Path | None = None,
    edge: str | Path | None = None,
    *,
    procedural: bool = False,
) -> CarAssets:
    """The car to attack.

    With no arguments: the DAS Audi from ``../shared/data/das_car`` (309 paintable faces, ``smile.jpg`` seed)
    when it is present, else the generated car (:func:`make_procedural_car`) with scikit-image's ``coffee``
    photo as seed. Explicit paths override each part; a seed without an edge mask gets a Canny edge map.

    Raises:
        ValueError: the mesh has no UVs, or the face list is out of range.
    """
    root = shared_data_dir()
    das = root / "das_car" if root is not None else None
    use_das = not procedural and mesh is None and das is not None and (das / "audi_et_te.obj").is_file()
    if procedural or (mesh is None and not use_das):
        car = make_procedural_car()
        name = "procedural car"
    else:
        mesh_path = Path(mesh) if mesh is not None else das / "audi_et_te.obj"  # type: ignore[operator]
        car = load_mesh(mesh_path, require_uv=True)
        name = str(mesh_path)
        face_path = Path(faces) if faces is not None else (das / "all_faces.txt" if use_das else None)  # type: ignore[operator]
        if face_path is None:
            raise ValueError("a custom mesh needs --faces (a list of paintable face ids, 1-based)")
        car = car.with_paintable(load_face_ids(face_path, car.num_faces))
    if faces is not None and name == "procedural car":
        car = car.with_paintable(load_face_ids(faces, car.num_faces))
    if seed_texture is not None:
        seed = load_image(seed_texture, 256)
    elif use_das and (das / "contents" / "smile.jpg").is_file():  # type: ignore[operator]
        seed = load_image(das / "contents" / "smile.jpg", 256)  # type: ignore[operator]
        if edge is None:
            edge = das / "contents" / "smile_edge.jpg"  # type: ignore[operator]
    else:
        from skimage import data

        seed = torch.from_numpy(data.coffee().astype(np.float32) / 255).permute(2, 0, 1)
        seed = F.interpolate(seed[None], size=(256, 256), mode="bilinear", align_corners=False)[0]
    edge_t = (load_image(edge, 256).mean(0, keepdim=True) >= 0.5).float() if edge is not None else _canny(seed)
    return CarAssets(car, seed.clamp(0, 1), edge_t, name)


def load_backgrounds(root: str | Path | None = None, *, max_side: int = 512) -> list[torch.Tensor]:
    """Background photos ``(3, H, W)``: ``root`` (or ``../shared/data/backgrounds``) or scikit-image's photos."""
    from PIL import Image

    folder = Path(root) if root is not None else None
    if folder is None:
        shared = shared_data_dir()
        if shared is not None and (shared / "backgrounds").is_dir():
            folder = shared / "backgrounds"
    images: list[torch.Tensor] = []
    if folder is not None:
        if not folder.is_dir():
            raise NotADirectoryError(f"background folder not found: {folder}")
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"}:
                img = Image.open(p).convert("RGB")
                img.thumbnail((max_side, max_side))
                images.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1))
        if not images:
            raise ValueError(f"no images (.png/.jpg) in background folder {folder}")
        return images
    from skimage import data

    for name in (
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "motorcycle_left",
    ):
        try:
            arr = getattr(data, name)()
        except Exception:  # some skimage photos are fetched on demand; only the shipped ones are used
            continue
        if arr.ndim == 3 and arr.shape[2] == 3:
            images.append(torch.from_numpy(arr.astype(np.float32) / 255).permute(2, 0, 1))
    if not images:
        raise ValueError("no background photos found (neither ../shared/data/backgrounds nor scikit-image's)")
    return images


def random_background(
    images: list[torch.Tensor], size: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random square crop (30-100% of the short side), random flip, resized to ``size``."""
    g = generator
    img = images[int(torch.randint(len(images), (1,), generator=g))]
    _, h, w = img.shape
    side = max(8, int(min(h, w) * (0.3 + 0.7 * float(torch.rand(1, generator=g)))))
    y = int(torch.randint(h - side + 1, (1,), generator=g))
    x = int(torch.randint(w - side + 1, (1,), generator=g))
    crop = img[:, y : y + side, x : x + side]
    if float(torch.rand(1, generator=g)) < 0.5:
        crop = crop.flip(-1)
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def original_texture(mesh: Mesh, cube_size: int = 6) -> CubeTexture:
    """A cube texture painting every paintable face with its own material colour (the raw car)."""
    col = mesh.face_colors()[mesh.paintable]
    return CubeTexture(col[:, None, None, None, :].expand(-1, cube_size, cube_size, cube_size, 3).contiguous())


@dataclass
class ViewSet:
    """Cached views of the car with one background each (the unit the attack and evaluation iterate over)."""

    views: list[ViewCache]
    backgrounds: torch.Tensor
    cameras: list[Camera]

    def __len__(self) -> int:
        return len(self.views)

    def subset(self, idx) -> ViewSet:
        """The views at positions ``idx``, with their backgrounds and cameras."""
        idx = [int(i) for i in idx]
        return ViewSet([self.views[i] for i in idx], self.backgrounds[idx], [self.cameras[i] for i in idx])


def make_views(
    mesh: Mesh,
    n: int,
    size: int,
    backgrounds: list[torch.Tensor],
    *,
    generator: torch.Generator | None = None,
    supersample: int = 2,
    min_paint: int = 1,
) -> ViewSet:
    """``n`` cached random views of ``mesh`` (see :data:`CAMERA_RANGES`), each over a random background crop.

    Views that show fewer than ``min_paint`` painted raster pixels are redrawn (at most ``20 n`` tries), so every
    view can be attacked.
    """
    views, bgs, cams = [], [], []
    tries = 0
    r = CAMERA_RANGES
    while len(views) < n:
        tries += 1
        if tries > 20 * max(n, 1):
            raise ValueError(f"could not find {n} views showing at least {min_paint} painted pixels")
        cam = sample_cameras(
            1, distance=r["distance"], elevation=r["elevation"], azimuth=r["azimuth"], fov=r["fov"], generator=generator
        )[0]
        view = build_view(mesh, cam, size, supersample=supersample)
        if view.paint_pix.numel() < min_paint:
            continue
        views.append(view)
        cams.append(cam)
        bgs.append(random_background(backgrounds, size, generator=generator))
    return ViewSet(views, torch.stack(bgs) if bgs else torch.zeros(0, 3, size, size), cams)


def render_views(viewset: ViewSet, texture) -> torch.Tensor:
    """``(N, 3, S, S)`` images of every view painted with ``texture``."""
    return torch.stack([render(v, texture, bg) for v, bg in zip(viewset.views, viewset.backgrounds, strict=False)])


def _photometric(img: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    b = 0.8 + 0.4 * float(torch.rand(1, generator=g))
    c = 0.8 + 0.4 * float(torch.rand(1, generator=g))
    mean = img.mean()
    return ((img - mean) * c + mean * b).clamp(0, 1)


def render_car_dataset(
    assets: CarAssets,
    n: int,
    size: int,
    *,
    seed: int = 0,
    backgrounds: list[torch.Tensor] | None = None,
    random_paint: float = 0.5,
    progress=None,
) -> dict[str, torch.Tensor]:
    """Render a car-vs-not-car data set.

    Args:
        assets: the car.
        n: number of images (half cars; of the rest, half background only, half distractor objects).
        size: image side.
        seed: seeds every draw.
        backgrounds: photos to crop (default :func:`load_backgrounds`).
        random_paint: fraction of car images whose paintable faces get a random paint job.
        progress: optional callable ``progress(i)`` called after each image.

    Returns:
        ``images`` uint8 ``(N, 3, S, S)``, ``labels`` int64 (1 = car), ``boxes`` float ``(N, 4)`` (car box in
        pixels, zeros for negatives), ``painted`` bool (random paint used).
    """
    g = torch.Generator().manual_seed(seed)
    bgs = backgrounds if backgrounds is not None else load_backgrounds()
    mesh = assets.mesh
    orig = original_texture(mesh)
    uv = mesh.paint_uv()
    r = CAMERA_RANGES
    images, labels, boxes, painted = [], [], [], []
    for i in range(n):
        bg = random_background(bgs, size, generator=g)
        u = float(torch.rand(1, generator=g))
        cam = sample_cameras(
            1, distance=r["distance"], elevation=r["elevation"], azimuth=r["azimuth"], fov=r["fov"], generator=g
        )[0]
        box = torch.zeros(4)
        rand = False
        if u < 0.5:
            view = build_view(mesh, cam, size)
            rand = float(torch.rand(1, generator=g)) < random_paint
            tex = CubeTexture(random_cube_colors(uv, generator=g)) if rand else orig
            with torch.no_grad():
                img = render(view, tex, bg)
            box, label = view.box, 1
        elif u < 0.75:
            img, label = bg, 0
        else:
            shape = DISTRACTOR_SHAPES[int(torch.randint(len(DISTRACTOR_SHAPES), (1,), generator=g))]
            obj = make_distractor(shape, generator=g)
            try:
                view = build_view(obj, cam, size)
                img = render(view, None, bg)
            except ValueError:
                img = bg
            label = 0
        img = _photometric(img, g)
        images.append((img * 255).round().to(torch.uint8))
        labels.append(label)
        boxes.append(box)
        painted.append(rand)
        if progress is not None:
            progress(i)
    return {
        "images": torch.stack(images),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "boxes": torch.stack(boxes).float(),
        "painted": torch.tensor(painted),
    }


def load_split(folder: str | Path, split: str) -> dict:
    """A data split written by ``robustvision das dataset`` (``FOLDER/SPLIT.pt``), loaded with ``weights_only``.

    Raises:
        FileNotFoundError: no such split (the message names the command that writes it).
    """
    from robustvision.models.checkpoints import torch_load_trusted

    folder = Path(folder)
    path = folder / f"{split}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `robustvision das dataset --out {folder}` first")
    return torch_load_trusted(path, what="DAS data split")
