"""Differentiable textures for the painted faces: NMR colour cubes (as DAS) and a UV atlas (via grid_sample).

Both keep an unconstrained parameter ``P`` and map it to colours with DAS's ``0.5 * (tanh(P) + 1)``, so the
colours stay in [0, 1] without clipping. Both expose ``sample(slot, bary) -> (N, 3)``: the colour at
barycentric point ``bary`` of painted face ``slot`` (an index into ``mesh.paintable_ids``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustvision.physical.mesh import Mesh

__all__ = [
    "CubeTexture",
    "UVTexture",
    "to_param",
    "cube_from_image",
    "load_image",
    "random_image",
    "random_cube_colors",
    "create_texture",
]


def to_param(colors: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Inverse of ``0.5 * (tanh(P) + 1)``: colours in [0, 1] -> the pre-tanh parameter."""
    return torch.atanh(colors.clamp(eps, 1 - eps) * 2 - 1)


class CubeTexture(nn.Module):
    """NMR per-face texture cubes: ``(P, T, T, T, 3)``, sampled trilinearly at ``bary * (T - 1)``.

    Args:
        colors: ``(P, T, T, T, 3)`` initial colours in [0, 1] (e.g. from :func:`cube_from_image`).

    Example:
        >>> tex = CubeTexture(torch.full((10, 6, 6, 6, 3), 0.5))
        >>> tex.sample(torch.tensor([0, 9]), torch.tensor([[1.0, 0, 0], [0.2, 0.3, 0.5]])).shape
        torch.Size([2, 3])
    """

    kind = "cube"

    def __init__(self, colors: torch.Tensor) -> None:
        super().__init__()
        if colors.ndim != 5 or colors.shape[-1] != 3 or not (colors.shape[1] == colors.shape[2] == colors.shape[3]):
            raise ValueError(f"cube texture colours must be (P, T, T, T, 3), got {tuple(colors.shape)}")
        if colors.shape[1] < 2:
            raise ValueError("cube texture size T must be >= 2")
        self.param = nn.Parameter(to_param(colors.float()))

    @property
    def size(self) -> int:
        return int(self.param.shape[1])

    def colors(self) -> torch.Tensor:
        """``(P, T, T, T, 3)`` colours in [0, 1]."""
        return 0.5 * (torch.tanh(self.param) + 1)

    def forward(self, slot: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
        return self.sample(slot, bary)

    def sample(self, slot: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
        """Trilinear lookup over the 8 texels around ``bary * (T - 1)`` of each face's cube."""
        t = self.size
        cube = self.colors()
        pos = bary.to(cube.dtype).clamp(0, 1) * (t - 1)
        i0 = pos.floor().clamp(0, t - 2).long()
        frac = pos - i0
        out = 0
        for dx in (0, 1):
            wx = frac[:, 0] if dx else 1 - frac[:, 0]
            for dy in (0, 1):
                wy = frac[:, 1] if dy else 1 - frac[:, 1]
                for dz in (0, 1):
                    wz = frac[:, 2] if dz else 1 - frac[:, 2]
                    texel = cube[slot, i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz]
                    out = out + (wx * wy * wz)[:, None] * texel
        return out


class UVTexture(nn.Module):
    """A UV atlas ``(3, H, W)`` sampled bilinearly (``grid_sample``) at the interpolated face UVs.

    Args:
        image: ``(3, H, W)`` initial atlas in [0, 1]; UV (0, 0) is the image's bottom-left corner (OBJ).
        paint_uv: ``(P, 3, 2)`` corner UVs of the painted faces (e.g. :meth:`Mesh.paint_uv`).
    """

    kind = "uv"

    def __init__(self, image: torch.Tensor, paint_uv: torch.Tensor) -> None:
        super().__init__()
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"UV atlas must be (3, H, W), got {tuple(image.shape)}")
        if paint_uv.ndim != 3 or paint_uv.shape[1:] != (3, 2):
            raise ValueError(f"paint_uv must be (P, 3, 2), got {tuple(paint_uv.shape)}")
        self.param = nn.Parameter(to_param(image.float())[None])
        self.register_buffer("paint_uv", paint_uv.float())

    def colors(self) -> torch.Tensor:
        """``(3, H, W)`` atlas in [0, 1]."""
        return 0.5 * (torch.tanh(self.param[0]) + 1)

    def forward(self, slot: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
        return self.sample(slot, bary)

    def sample(self, slot: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
        """Bilinear atlas lookup at the barycentric interpolation of the face's corner UVs."""
        atlas = 0.5 * (torch.tanh(self.param) + 1)
        uv = (bary.to(atlas.dtype)[:, :, None] * self.paint_uv[slot].to(atlas.dtype)).sum(1)
        grid = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], 1).view(1, 1, -1, 2)
        out = F.grid_sample(atlas, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[0, :, 0].T


def _cube_barys(t: int) -> torch.Tensor:
    """``(T, T, T, 3)`` barycentric point each cube texel stands for (normalised cube coordinates)."""
    g = torch.arange(t, dtype=torch.float32)
    abc = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1)
    s = abc.sum(-1, keepdim=True)
    return torch.where(s > 0, abc / s.clamp_min(1e-8), torch.full_like(abc, 1 / 3))


def cube_from_image(
    image: torch.Tensor, paint_uv: torch.Tensor, size: int = 6, *, mode: str = "bilinear"
) -> torch.Tensor:
    """Project an image onto the painted faces' cubes through their UVs: ``(P, T, T, T, 3)``.

    Texel ``(a, b, c)`` takes the colour at barycentric point ``(a, b, c) / (a + b + c)``. This is how a seed
    picture (``smile.jpg``) and its edge mask become DAS cube-space tensors when the released ``.npy`` files
    are not at hand.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got {tuple(image.shape)}")
    bary = _cube_barys(size).view(-1, 3)
    uv = torch.einsum("kj,pjd->pkd", bary, paint_uv.float())  # P, T^3, 2
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], -1).view(1, -1, 1, 2)
    out = F.grid_sample(image[None].float(), grid, mode=mode, padding_mode="border", align_corners=False)
    return out[0, :, :, 0].T.reshape(paint_uv.shape[0], size, size, size, image.shape[0])


def load_image(path, size: int | None = None) -> torch.Tensor:
    """An image file as ``(3, H, W)`` float32 in [0, 1], optionally resized to ``size`` x ``size``."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    if size is not None:
        img = img.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def random_image(size: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random paint job ``(3, size, size)``: a flat colour, smooth colour blobs, stripes or camouflage."""
    g = generator
    kind = int(torch.randint(4, (1,), generator=g))
    base = torch.rand(3, 1, 1, generator=g)
    if kind == 0:
        return base.expand(3, size, size).clone()
    if kind == 1 or kind == 3:
        cells = int(torch.randint(2, 9, (1,), generator=g))
        noise = torch.rand(1, 3, cells, cells, generator=g)
        img = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        if kind == 3:  # quantised camouflage: a few flat colours
            palette = torch.rand(4, 3, generator=g)
            idx = (img.mean(0) * 4).long().clamp(0, 3)
            img = palette[idx].permute(2, 0, 1)
        return img
    other = torch.rand(3, 1, 1, generator=g)
    period = float(torch.randint(4, max(6, size // 3), (1,), generator=g))
    angle = float(torch.rand(1, generator=g)) * math.pi
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    band = ((xx * math.cos(angle) + yy * math.sin(angle)) / period).floor() % 2
    return torch.where(band.bool(), base, other)


def random_cube_colors(
    paint_uv: torch.Tensor, size: int = 6, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random paint for the painted faces in cube space: a random image through the UVs, or per-face colours."""
    if float(torch.rand(1, generator=generator)) < 0.25:
        col = torch.rand(paint_uv.shape[0], 1, 1, 1, 3, generator=generator)
        return col.expand(-1, size, size, size, 3).contiguous()
    return cube_from_image(random_image(64, generator=generator), paint_uv, size)


def create_texture(kind: str, mesh: Mesh, init: torch.Tensor, *, cube_size: int = 6) -> nn.Module:
    """A texture of ``kind`` (``cube`` | ``uv``) for ``mesh``'s painted faces, initialised from image ``init``."""
    if mesh.paintable_ids.numel() == 0:
        raise ValueError("the mesh has no paintable faces")
    uv = mesh.paint_uv()
    if kind == "cube":
        return CubeTexture(cube_from_image(init, uv, cube_size))
    if kind == "uv":
        return UVTexture(init, uv)
    raise ValueError(f"unknown texture kind {kind!r}; choose 'cube' or 'uv'")
