"""Triangle meshes for the physical attack: the DAS Audi asset, any trimesh-readable file, and a generated car.

The Dual Attention Suppression attack (Wang et al., CVPR 2021, arXiv:2103.01050) paints part of a 3D car. The
painted region is a list of face ids (``all_faces.txt``, 1-based, in OBJ file order), so face order matters.
trimesh splits a multi-material OBJ into one geometry per material, reorders faces and drops UVs of materials
without an image, which would break those ids; ``.obj`` files are therefore read by a small file-order reader
here, and every other format (``.ply``, ``.glb``, ``.stl``, ...) goes through :func:`trimesh.load`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from robustvision.runtime import require_extra

__all__ = [
    "Mesh",
    "load_mesh",
    "load_face_ids",
    "normalize_nmr",
    "make_procedural_car",
    "make_distractor",
    "DISTRACTOR_SHAPES",
]


@dataclass
class Mesh:
    """A triangle mesh with per-face materials and per-corner UVs.

    Attributes:
        vertices: ``(V, 3)`` float32 positions (Z up, X the car's long axis after :func:`normalize_nmr`).
        faces: ``(F, 3)`` int64 vertex indices, in file order.
        face_uv: ``(F, 3, 2)`` float32 UV of each face corner, or ``None`` for a mesh without UVs.
        face_material: ``(F,)`` int64 index into ``material_colors``.
        material_colors: ``(M, 3)`` float32 diffuse colours in [0, 1].
        material_names: the ``M`` material names.
        paintable: ``(F,)`` bool, the faces a texture may change (all False until :meth:`with_paintable`).
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    face_uv: torch.Tensor | None
    face_material: torch.Tensor
    material_colors: torch.Tensor
    material_names: list[str] = field(default_factory=list)
    paintable: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"mesh vertices must be (V, 3), got {tuple(self.vertices.shape)}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or self.faces.shape[0] == 0:
            raise ValueError(f"mesh faces must be a non-empty (F, 3) triangle array, got {tuple(self.faces.shape)}")
        if int(self.faces.min()) < 0 or int(self.faces.max()) >= self.vertices.shape[0]:
            raise ValueError("mesh faces index vertices out of range")
        if self.paintable is None:
            self.paintable = torch.zeros(self.faces.shape[0], dtype=torch.bool)

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def paintable_ids(self) -> torch.Tensor:
        """0-based ids of the paintable faces, ascending."""
        return torch.nonzero(self.paintable).flatten()

    def face_colors(self) -> torch.Tensor:
        """``(F, 3)`` diffuse colour of every face from its material."""
        return self.material_colors[self.face_material]

    def with_paintable(self, face_ids: torch.Tensor | np.ndarray | list[int]) -> Mesh:
        """A copy whose paintable faces are ``face_ids`` (0-based)."""
        ids = torch.as_tensor(np.asarray(face_ids), dtype=torch.int64).flatten()
        if ids.numel() == 0:
            raise ValueError("the paintable face list is empty")
        if int(ids.min()) < 0 or int(ids.max()) >= self.num_faces:
            raise ValueError(
                f"paintable face ids are out of range: they must lie in [0, {self.num_faces - 1}], "
                f"got {int(ids.min())}..{int(ids.max())}"
            )
        mask = torch.zeros(self.num_faces, dtype=torch.bool)
        mask[ids] = True
        return replace(self, paintable=mask)

    def paint_uv(self) -> torch.Tensor:
        """``(P, 3, 2)`` UVs of the paintable faces, rescaled so the painted region spans [0, 1]^2.

        DAS's seed pattern covers its patch of faces; rescaling the atlas coordinates of just those faces lets
        one seed image (or one UV atlas) cover the painted region whatever part of the asset's atlas it uses.
        """
        if self.face_uv is None:
            raise ValueError("this mesh has no UV coordinates; a UV texture or seed image needs them")
        uv = self.face_uv[self.paintable]
        lo = uv.reshape(-1, 2).min(0).values
        hi = uv.reshape(-1, 2).max(0).values
        return (uv - lo) / (hi - lo).clamp_min(1e-8)

    def to_trimesh(self):
        """The geometry as a :class:`trimesh.Trimesh` (for ray casting and export)."""
        trimesh = require_extra("trimesh", "physical")

        return trimesh.Trimesh(self.vertices.double().numpy(), self.faces.numpy(), process=False)


def _read_mtl(path: Path) -> dict[str, tuple[float, float, float]]:
    colors: dict[str, tuple[float, float, float]] = {}
    name = None
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "newmtl" and len(parts) > 1:
            name = parts[1]
            colors[name] = (0.8, 0.8, 0.8)
        elif parts[0] == "Kd" and name is not None and len(parts) >= 4:
            colors[name] = tuple(float(v) for v in parts[1:4])  # type: ignore[assignment]
    return colors


def _load_obj(path: Path) -> Mesh:
    verts: list[list[float]] = []
    uvs: list[list[float]] = []
    faces: list[list[int]] = []
    face_vt: list[list[int]] = []
    face_mat: list[int] = []
    names: list[str] = []
    mtl: dict[str, tuple[float, float, float]] = {}
    current = -1
    for line in path.read_text(errors="replace").splitlines():
        if not line or line[0] == "#":
            continue
        parts = line.split()
        if not parts:
            continue
        tag = parts[0]
        if tag == "v":
            verts.append([float(p) for p in parts[1:4]])
        elif tag == "vt":
            uvs.append([float(p) for p in parts[1:3]])
        elif tag == "f":
            corners = [p.split("/") for p in parts[1:]]
            vi = [int(c[0]) for c in corners]
            ti = [int(c[1]) if len(c) > 1 and c[1] else 0 for c in corners]
            vi = [v - 1 if v > 0 else len(verts) + v for v in vi]
            ti = [t - 1 if t > 0 else (len(uvs) + t if t < 0 else -1) for t in ti]
            for k in range(1, len(vi) - 1):  # fan-triangulate polygons
                faces.append([vi[0], vi[k], vi[k + 1]])
                face_vt.append([ti[0], ti[k], ti[k + 1]])
                face_mat.append(current)
        elif tag == "usemtl" and len(parts) > 1:
            if parts[1] not in names:
                names.append(parts[1])
            current = names.index(parts[1])
        elif tag == "mtllib" and len(parts) > 1:
            mtl_path = path.parent / " ".join(parts[1:])
            if mtl_path.is_file():
                mtl.update(_read_mtl(mtl_path))
    if not faces:
        raise ValueError(f"{path} holds no faces")
    fmat = np.asarray(face_mat, dtype=np.int64)
    if (fmat < 0).any():  # faces before any usemtl get a default material
        names.append("default")
        fmat[fmat < 0] = len(names) - 1
    colors = np.asarray([mtl.get(n, (0.8, 0.8, 0.8)) for n in names], dtype=np.float32)
    vt = np.asarray(face_vt, dtype=np.int64)
    face_uv = None
    if uvs and (vt >= 0).all():
        face_uv = torch.from_numpy(np.asarray(uvs, dtype=np.float32)[vt])
    return Mesh(
        vertices=torch.tensor(verts, dtype=torch.float32),
        faces=torch.tensor(faces, dtype=torch.int64),
        face_uv=face_uv,
        face_material=torch.from_numpy(fmat),
        material_colors=torch.from_numpy(colors),
        material_names=names,
    )


def _load_trimesh(path: Path) -> Mesh:
    trimesh = require_extra("trimesh", "physical")

    geom = trimesh.load(str(path), process=False, maintain_order=True, force="mesh")
    faces = torch.as_tensor(np.asarray(geom.faces), dtype=torch.int64)
    uv = getattr(geom.visual, "uv", None)
    face_uv = None if uv is None else torch.as_tensor(np.asarray(uv, dtype=np.float32))[faces]
    return Mesh(
        vertices=torch.as_tensor(np.asarray(geom.vertices, dtype=np.float32)),
        faces=faces,
        face_uv=face_uv,
        face_material=torch.zeros(faces.shape[0], dtype=torch.int64),
        material_colors=torch.tensor([[0.8, 0.8, 0.8]]),
        material_names=["default"],
    )


def load_mesh(path: str | Path, *, normalize: bool = True, require_uv: bool = False) -> Mesh:
    """Load a triangle mesh; ``.obj`` keeps file face order and ``usemtl`` materials (Kd colours).

    Args:
        path: a mesh file (``.obj`` with optional ``.mtl``, or anything :func:`trimesh.load` reads).
        normalize: apply the NMR normalisation (:func:`normalize_nmr`) so the long axis spans [-1, 1].
        require_uv: raise ``ValueError`` when the mesh has no UV coordinates.

    Returns:
        The :class:`Mesh`.

    Example:
        >>> mesh = load_mesh("audi_et_te.obj").with_paintable(load_face_ids("all_faces.txt", 23145))  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path}")
    mesh = _load_obj(path) if path.suffix.lower() == ".obj" else _load_trimesh(path)
    if require_uv and mesh.face_uv is None:
        raise ValueError(f"{path} has no UV coordinates (vt); a UV texture or seed image needs them")
    return normalize_nmr(mesh) if normalize else mesh


def load_face_ids(path: str | Path, num_faces: int, *, one_based: bool = True) -> torch.Tensor:
    """Read a face-id list (one integer per line, 1-based as DAS/FCA write them) as 0-based ids.

    Raises:
        ValueError: when an id is out of ``[1, num_faces]`` (or ``[0, num_faces)`` for 0-based lists) or the
            file holds no ids.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"face list not found: {path}")
    try:
        ids = np.asarray([int(tok) for tok in path.read_text().split()], dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"{path}: face lists hold one integer id per line ({err})") from err
    if ids.size == 0:
        raise ValueError(f"{path} holds no face ids")
    ids = ids - 1 if one_based else ids
    bad = ids[(ids < 0) | (ids >= num_faces)]
    if bad.size:
        base = 1 if one_based else 0
        raise ValueError(
            f"{path}: face id {int(bad[0]) + base} is out of range for a mesh of {num_faces} faces "
            f"(valid ids are {base}..{num_faces - 1 + base}; {bad.size} bad ids in all)"
        )
    return torch.from_numpy(np.unique(ids))


def normalize_nmr(mesh: Mesh) -> Mesh:
    """Neural Mesh Renderer's ``load_obj(normalization=True)``: the longest axis then spans [-1, 1].

    Subtract the per-axis min, divide by the global max, multiply by 2 and subtract half the per-axis max.
    """
    v = mesh.vertices - mesh.vertices.min(0).values
    v = v / v.abs().max().clamp_min(1e-12) * 2
    v = v - v.max(0).values / 2
    return replace(mesh, vertices=v.contiguous())


def _box(lo, hi, subdiv: int):
    trimesh = require_extra("trimesh", "physical")

    box = trimesh.creation.box(
        extents=np.subtract(hi, lo), transform=trimesh.transformations.translation_matrix(np.add(lo, hi) / 2)
    )
    for _ in range(subdiv):
        box = box.subdivide()
    return np.asarray(box.vertices), np.asarray(box.faces)


def make_procedural_car(*, subdiv: int = 2) -> Mesh:
    """A generated car-like mesh (body, cabin, four wheels, windows) with planar side-view UVs.

    It lets the package run without the shared Audi asset. Its paintable faces are the body's and cabin's
    sides and top (not wheels or glass), as DAS paints a patch of the exterior.

    Args:
        subdiv: loop-free midpoint subdivisions of the boxes (more faces -> finer paint).
    """
    trimesh = require_extra("trimesh", "physical")

    parts: list[tuple[np.ndarray, np.ndarray, int, bool]] = []
    # (vertices, faces, material, paintable)
    v, f = _box((-1.0, -0.42, 0.12), (1.0, 0.42, 0.5), subdiv)
    parts.append((v, f, 0, True))
    v, f = _box((-0.45, -0.36, 0.5), (0.45, 0.36, 0.8), subdiv)
    parts.append((v, f, 0, True))
    for x in (-0.62, 0.62):
        for y in (-0.4, 0.4):
            cyl = trimesh.creation.cylinder(radius=0.17, height=0.1, sections=16)
            cyl.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
            cyl.apply_translation([x, y, 0.17])
            parts.append((np.asarray(cyl.vertices), np.asarray(cyl.faces), 1, False))
    for y in (-0.362, 0.362):  # side windows, slightly proud of the cabin
        v, f = _box((-0.38, y - 0.004, 0.55), (0.38, y + 0.004, 0.76), 0)
        parts.append((v, f, 2, False))
    v, f = _box((0.449, -0.3, 0.55), (0.456, 0.3, 0.76), 0)  # windscreen
    parts.append((v, f, 2, False))
    verts, faces, mats, paint = [], [], [], []
    offset = 0
    for v, f, m, p in parts:
        verts.append(v)
        faces.append(f + offset)
        mats.append(np.full(len(f), m))
        paint.append(np.full(len(f), p))
        offset += len(v)
    verts_np = np.concatenate(verts).astype(np.float32)
    faces_np = np.concatenate(faces).astype(np.int64)
    # planar UVs: u along the length, v along the height, mirrored by side so both flanks read the same way
    uv = np.stack([(verts_np[:, 0] + 1) / 2, verts_np[:, 2] / 0.8], 1).clip(0, 1).astype(np.float32)
    mesh = Mesh(
        vertices=torch.from_numpy(verts_np),
        faces=torch.from_numpy(faces_np),
        face_uv=torch.from_numpy(uv[faces_np]),
        face_material=torch.from_numpy(np.concatenate(mats)),
        material_colors=torch.tensor([[0.75, 0.1, 0.1], [0.08, 0.08, 0.08], [0.25, 0.3, 0.35]]),
        material_names=["body", "tyre", "glass"],
    )
    return normalize_nmr(mesh).with_paintable(np.nonzero(np.concatenate(paint))[0])


DISTRACTOR_SHAPES = ("box", "sphere", "cylinder", "capsule", "cone", "torus")


def make_distractor(shape: str, *, generator: torch.Generator | None = None) -> Mesh:
    """A non-car object (box, sphere, ...) sized like a car, for the negative class of the car data set."""
    trimesh = require_extra("trimesh", "physical")

    g = generator
    r = torch.rand(4, generator=g).numpy()
    if shape == "box":
        geom = trimesh.creation.box(extents=[0.6 + 1.2 * r[0], 0.4 + 0.8 * r[1], 0.4 + 1.0 * r[2]])
    elif shape == "sphere":
        geom = trimesh.creation.icosphere(subdivisions=2, radius=0.4 + 0.4 * r[0])
    elif shape == "cylinder":
        geom = trimesh.creation.cylinder(radius=0.2 + 0.4 * r[0], height=0.5 + 1.2 * r[1], sections=20)
    elif shape == "capsule":
        geom = trimesh.creation.capsule(radius=0.2 + 0.3 * r[0], height=0.4 + 1.0 * r[1], count=[12, 12])
    elif shape == "cone":
        geom = trimesh.creation.cone(radius=0.3 + 0.4 * r[0], height=0.6 + 1.0 * r[1], sections=20)
    elif shape == "torus":
        geom = trimesh.creation.torus(major_radius=0.5 + 0.3 * r[0], minor_radius=0.12 + 0.12 * r[1])
    else:
        raise ValueError(f"unknown distractor shape {shape!r}; choose from {', '.join(DISTRACTOR_SHAPES)}")
    v = np.asarray(geom.vertices, dtype=np.float32)
    v[:, 2] -= v[:, 2].min()
    faces = torch.as_tensor(np.asarray(geom.faces), dtype=torch.int64)
    color = torch.rand(1, 3, generator=g)
    return Mesh(
        vertices=torch.from_numpy(v),
        faces=faces,
        face_uv=None,
        face_material=torch.zeros(faces.shape[0], dtype=torch.int64),
        material_colors=color,
        material_names=["distractor"],
    )
