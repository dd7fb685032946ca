"""A per-view fragment-cache renderer: rasterise once on the CPU, then render any texture in pure torch.

In DAS (Wang et al., CVPR 2021) only the texture is optimised; the mesh, the cameras and the lighting are
fixed. Which face covers each pixel, at which barycentric point, and how it is shaded, therefore never change
during the optimisation. :func:`rasterize` computes them once per view with a vectorised z-buffer rasteriser
(no compiled extension), :class:`ViewCache` keeps them, and :func:`render` turns a texture into an image with a
gather, a multiply and a scatter. The texture gradient is exact for the cached rasterisation.

Shading is NMR's flat model: ``ambient + directional * max(0, n . d)`` per face, two-sided (NMR's
``fill_back=True``). Anti-aliasing renders at ``supersample`` times the size and average-pools.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustvision.physical.camera import Camera
from robustvision.physical.mesh import Mesh

__all__ = ["Fragments", "ViewCache", "rasterize", "build_view", "render", "render_batch", "EmptyViewError"]


class EmptyViewError(ValueError):
    """The camera sees no face of the mesh."""


@dataclass
class Fragments:
    """The visible face of each covered pixel.

    Attributes:
        height, width: raster size.
        pix: ``(N,)`` int64 flat pixel index (``row * width + col``) of each covered pixel.
        face: ``(N,)`` int64 id of the visible face.
        bary: ``(N, 3)`` perspective-correct barycentric weights of the pixel centre on that face.
        depth: ``(N,)`` view-space depth.
    """

    height: int
    width: int
    pix: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor


def rasterize(
    mesh: Mesh, camera: Camera, height: int, width: int, *, near: float = 1e-3, max_pairs: int = 4_000_000
) -> Fragments:
    """Z-buffer rasterisation of ``mesh`` seen by ``camera`` (pixel centres, both face sides).

    Every face's pixel bounding box is expanded into (face, pixel) pairs in chunks of at most ``max_pairs``;
    edge functions give screen barycentrics, the nearest face per pixel wins (ties: lowest face id), and
    barycentrics are perspective-corrected. Faces with a vertex behind the near plane are dropped.

    Raises:
        EmptyViewError: when no face covers any pixel.
    """
    if height < 1 or width < 1:
        raise ValueError(f"raster size must be positive, got {height}x{width}")
    verts = mesh.vertices.double()
    xy, z = camera.project(verts, height, width)
    tri_xy = xy[mesh.faces]  # F,3,2
    tri_z = z[mesh.faces]  # F,3
    lo = tri_xy.min(1).values
    hi = tri_xy.max(1).values
    c0 = torch.ceil(lo[:, 0] - 0.5).clamp(min=0).long()
    c1 = torch.floor(hi[:, 0] - 0.5).clamp(max=width - 1).long()
    r0 = torch.ceil(lo[:, 1] - 0.5).clamp(min=0).long()
    r1 = torch.floor(hi[:, 1] - 0.5).clamp(max=height - 1).long()
    nx = (c1 - c0 + 1).clamp(min=0)
    ny = (r1 - r0 + 1).clamp(min=0)
    keep = (tri_z > near).all(1) & (nx > 0) & (ny > 0)
    # twice the signed screen area; degenerate faces cover nothing
    e1 = tri_xy[:, 1] - tri_xy[:, 0]
    e2 = tri_xy[:, 2] - tri_xy[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    keep &= area.abs() > 1e-12
    fids = torch.nonzero(keep).flatten()
    n_pix = height * width
    best_z = torch.full((n_pix,), float("inf"), dtype=torch.float64)
    best_face = torch.full((n_pix,), -1, dtype=torch.int64)
    best_bary = torch.zeros(n_pix, 3, dtype=torch.float64)
    counts = (nx * ny)[fids]
    cum = torch.cumsum(counts, 0)
    start = 0
    while start < fids.numel():
        base = cum[start - 1] if start > 0 else torch.tensor(0)
        stop = int(torch.searchsorted(cum, base + max_pairs, right=True))
        stop = max(stop, start + 1)
        f = fids[start:stop]
        cnt = counts[start:stop]
        start = stop
        face = torch.repeat_interleave(f, cnt)
        first = torch.cumsum(cnt, 0) - cnt
        local = torch.arange(int(cnt.sum())) - torch.repeat_interleave(first, cnt)
        w = nx[face]
        col = c0[face] + local % w
        row = r0[face] + torch.div(local, w, rounding_mode="floor")
        px = col.double() + 0.5
        py = row.double() + 0.5
        t = tri_xy[face]
        a = area[face]
        # barycentric of vertex i = signed area of the sub-triangle opposite it / total area
        b0 = ((t[:, 1, 0] - px) * (t[:, 2, 1] - py) - (t[:, 1, 1] - py) * (t[:, 2, 0] - px)) / a
        b1 = ((t[:, 2, 0] - px) * (t[:, 0, 1] - py) - (t[:, 2, 1] - py) * (t[:, 0, 0] - px)) / a
        b2 = 1.0 - b0 - b1
        bs = torch.stack([b0, b1, b2], 1)
        inside = (bs >= -1e-9).all(1)
        if not inside.any():
            continue
        face, bs, pix = face[inside], bs[inside], (row * width + col)[inside]
        inv = bs / tri_z[face]
        depth = 1.0 / inv.sum(1)
        # nearest per pixel among this chunk and what is already in the buffer; ties go to the lowest face id
        zmin = torch.minimum(best_z.scatter_reduce(0, pix, depth, reduce="amin"), best_z)
        win = depth <= zmin[pix]
        fmin = torch.full((n_pix,), torch.iinfo(torch.int64).max, dtype=torch.int64)
        fmin.scatter_reduce_(0, pix[win], face[win], reduce="amin")
        win &= face == fmin[pix]
        better = win & (depth < best_z[pix])
        sel_pix = pix[better]
        best_z[sel_pix] = depth[better]
        best_face[sel_pix] = face[better]
        best_bary[sel_pix] = inv[better] * depth[better, None]
    covered = torch.nonzero(best_face >= 0).flatten()
    if covered.numel() == 0:
        raise EmptyViewError("the camera sees nothing of the mesh: move it closer or point it at the object")
    return Fragments(height, width, covered, best_face[covered], best_bary[covered].float(), best_z[covered].float())


@dataclass
class ViewCache:
    """Everything about one view that does not depend on the texture.

    Attributes:
        size: output image side (pixels); the raster is ``size * supersample``.
        supersample: anti-aliasing factor.
        static: ``(3, S, S)`` shaded colour of the unpainted car pixels at raster size, zero elsewhere.
        alpha: ``(1, size, size)`` car coverage after anti-aliasing (the silhouette).
        paint_pix: ``(N,)`` flat raster index of each painted pixel.
        paint_slot: ``(N,)`` index into the mesh's paintable faces (``mesh.paintable_ids``).
        paint_bary: ``(N, 3)`` barycentrics on that face.
        paint_shade: ``(N, 1)`` flat shading factor.
        paint_mask: ``(1, size, size)`` fraction of each output pixel covered by paint.
        box: ``(4,)`` car box ``x0, y0, x1, y1`` in output pixels (from the silhouette).
    """

    size: int
    supersample: int
    static: torch.Tensor
    alpha: torch.Tensor
    paint_pix: torch.Tensor
    paint_slot: torch.Tensor
    paint_bary: torch.Tensor
    paint_shade: torch.Tensor
    paint_mask: torch.Tensor
    box: torch.Tensor

    def to(self, device: torch.device | str) -> ViewCache:
        """A copy on ``device``."""
        kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return ViewCache(**kw)


def face_shading(
    mesh: Mesh, camera: Camera, *, ambient: float = 0.5, directional: float = 0.5, light_dir=(0.0, 0.0, 1.0)
) -> torch.Tensor:
    """``(F,)`` NMR flat shading ``ambient + directional * max(0, n . d)`` with normals turned to the camera."""
    v = mesh.vertices.double()[mesh.faces]
    n = torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=1)
    n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
    to_eye = torch.as_tensor(camera.eye, dtype=torch.float64) - v.mean(1)
    n = torch.where(((n * to_eye).sum(1, keepdim=True) < 0), -n, n)
    d = torch.as_tensor(light_dir, dtype=torch.float64)
    d = d / d.norm()
    return (ambient + directional * (n @ d).clamp_min(0)).float()


def build_view(
    mesh: Mesh,
    camera: Camera,
    size: int,
    *,
    supersample: int = 2,
    face_colors: torch.Tensor | None = None,
    ambient: float = 0.5,
    directional: float = 0.5,
    light_dir=(0.0, 0.0, 1.0),
) -> ViewCache:
    """Rasterise ``mesh`` once and cache what :func:`render` needs.

    Args:
        mesh: the mesh; its ``paintable`` faces are left to the texture.
        camera: the view.
        size: output side in pixels (square images).
        supersample: raster at ``size * supersample`` and average-pool (anti-aliasing).
        face_colors: ``(F, 3)`` colour of the unpainted faces (default: their material colour).
        ambient, directional, light_dir: the flat lighting.

    Raises:
        EmptyViewError: the camera sees nothing.
    """
    if size < 4:
        raise ValueError(f"image size must be >= 4, got {size}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    s = size * supersample
    frags = rasterize(mesh, camera, s, s)
    shade = face_shading(mesh, camera, ambient=ambient, directional=directional, light_dir=light_dir)
    colors = mesh.face_colors() if face_colors is None else face_colors
    painted = mesh.paintable[frags.face]
    static = torch.zeros(3, s * s)
    un = ~painted
    static[:, frags.pix[un]] = (colors[frags.face[un]] * shade[frags.face[un], None]).T
    cover = torch.zeros(1, 1, s * s)
    cover[0, 0, frags.pix] = 1.0
    paint_cover = torch.zeros(1, 1, s * s)
    paint_cover[0, 0, frags.pix[painted]] = 1.0
    slot_of_face = torch.full((mesh.num_faces,), -1, dtype=torch.int64)
    slot_of_face[mesh.paintable_ids] = torch.arange(mesh.paintable_ids.numel())
    rows = torch.div(frags.pix, s, rounding_mode="floor").float()
    cols = (frags.pix % s).float()
    box = torch.stack([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]) / supersample
    pool = (lambda x: F.avg_pool2d(x, supersample)) if supersample > 1 else (lambda x: x)
    return ViewCache(
        size=size,
        supersample=supersample,
        static=static.view(3, s, s),
        alpha=pool(cover.view(1, 1, s, s))[0],
        paint_pix=frags.pix[painted],
        paint_slot=slot_of_face[frags.face[painted]],
        paint_bary=frags.bary[painted],
        paint_shade=shade[frags.face[painted], None],
        paint_mask=pool(paint_cover.view(1, 1, s, s))[0],
        box=box,
    )


def render(view: ViewCache, texture, background: torch.Tensor) -> torch.Tensor:
    """Render one cached view with ``texture`` over ``background``; differentiable in the texture.

    Args:
        view: a :class:`ViewCache`.
        texture: a texture module from :mod:`robustvision.physical.texture` (``sample(slot, bary) -> (N, 3)``),
            or ``None`` to paint nothing (painted faces then render black; use ``static`` colours instead).
        background: ``(3, size, size)`` image in [0, 1].

    Returns:
        ``(3, size, size)`` image in [0, 1].
    """
    s = view.size * view.supersample
    if background.shape != (3, view.size, view.size):
        raise ValueError(f"background must be (3, {view.size}, {view.size}), got {tuple(background.shape)}")
    flat = view.static.reshape(3, s * s)
    if texture is not None and view.paint_pix.numel():
        colors = texture.sample(view.paint_slot, view.paint_bary) * view.paint_shade
        flat = flat.to(colors.dtype).index_copy(1, view.paint_pix, colors.T)
    car = flat.view(1, 3, s, s)
    if view.supersample > 1:
        car = F.avg_pool2d(car, view.supersample)
    car = car[0].to(background.dtype)
    return (background * (1 - view.alpha.to(background.dtype)) + car).clamp(0, 1)


def render_batch(views: list[ViewCache], texture, backgrounds: torch.Tensor) -> torch.Tensor:
    """Render several views: ``backgrounds`` is ``(N, 3, H, W)``; returns ``(N, 3, H, W)``."""
    if backgrounds.shape[0] != len(views):
        raise ValueError(f"need one background per view: {len(views)} views, {backgrounds.shape[0]} backgrounds")
    return torch.stack([render(v, texture, bg) for v, bg in zip(views, backgrounds, strict=False)])
