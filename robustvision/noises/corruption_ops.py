"""Shared building blocks of the ImageNet-C corruptions: the ``Corruption`` base class and batched torch ops.

Every op here reproduces the numerical behaviour of the library call the original generator made
(Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
ICLR 2019, https://github.com/hendrycks/robustness): ``skimage.filters.gaussian`` (scipy Gaussian kernel,
``truncate=4``, ``mode='nearest'``), ``cv2.filter2D`` (reflect-101 border), ``scipy.ndimage.zoom`` with
``order=1`` (align-corners bilinear), ``skimage.color.rgb2hsv``/``hsv2rgb`` and PIL's box resampling, but
on whole ``N x C x H x W`` batches and on whichever device the images live on.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from robustvision.noises.base import NOISES, Noise, NoiseKind

Profile = Literal["auto", "imagenet", "cifar"]
PROFILES = ("auto", "imagenet", "cifar")

# Images whose shorter side is below this use the CIFAR-10-C constants, the others the ImageNet-C ones.
# The original parameters are in pixels for 224x224 (ImageNet-C) and 32x32 (CIFAR-10-C) images; 112 sits
# half-way in scale, so 32x32 digits/CIFAR and 64x64 Tiny-ImageNet-sized images use the CIFAR table.
CIFAR_MAX_SIDE = 112


def check_severity(severity: object) -> int:
    """Validate an ImageNet-C severity: an integer from 1 to 5."""
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
        raise ValueError(f"severity must be an integer from 1 to 5, got {severity!r}")
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be an integer from 1 to 5, got {severity}")
    return int(severity)


def resolve_profile(profile: str, shape: tuple[int, ...] | torch.Size) -> str:
    """``auto`` -> ``cifar`` for images with a side below 112 pixels, else ``imagenet``."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if profile != "auto":
        return profile
    return "cifar" if min(int(shape[-2]), int(shape[-1])) < CIFAR_MAX_SIDE else "imagenet"


class Corruption(Noise):
    """Base class of the 19 ImageNet-C corruptions (kind ``natural``).

    Subclasses define ``table`` (profile -> five constants, one per severity, copied from the original
    generators) and implement ``sample_params``/``apply``.

    Args:
        severity: 1 (mildest) to 5.
        profile: ``imagenet`` (ImageNet-C constants), ``cifar`` (CIFAR-10-C constants) or ``auto``
            (chosen from the image size, see ``CIFAR_MAX_SIDE``).
    """

    kind = NoiseKind.NATURAL
    group: str = "digital"
    table: dict[str, tuple[Any, ...]] = {}

    def __init__(self, severity: int = 1, *, profile: Profile = "auto") -> None:
        super().__init__(check_severity(severity))
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
        self.profile = profile

    @property
    def params(self) -> dict[str, Any]:
        return {"severity": self.severity, "profile": self.profile}

    def constants(self, shape: tuple[int, ...] | torch.Size) -> Any:
        """The table entry for this severity and the profile that fits ``shape``."""
        return self.table[resolve_profile(self.profile, shape)][self.severity - 1]


def register_corruption(name: str, group: str):
    """Register a :class:`Corruption` subclass in ``NOISES`` under ``name`` (kind natural)."""

    def decorator(cls: type[Corruption]) -> type[Corruption]:
        cls.name = name
        cls.group = group
        NOISES.register(name, kind=NoiseKind.NATURAL, family="imagenet_c", group=group)(cls)
        return cls

    return decorator


# ----------------------------------------------------------------------------------------------------------------
# random numbers: drawn on the generator's device, moved to the images' device in apply


def _device_of(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def rand(shape: tuple[int, ...], generator: torch.Generator | None, dtype=torch.float32) -> torch.Tensor:
    """Uniform [0, 1) numbers from ``generator`` (the global RNG when None)."""
    return torch.rand(shape, generator=generator, device=_device_of(generator), dtype=dtype)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal numbers from ``generator`` (the global RNG when None)."""
    return torch.randn(shape, generator=generator, device=_device_of(generator), dtype=dtype)


def seed_from(generator: torch.Generator | None, n: int) -> torch.Tensor:
    """``n`` 62-bit seeds for sub-generators (used where torch samples from data-dependent rates)."""
    return torch.randint(0, 2**62, (n,), generator=generator, device=_device_of(generator), dtype=torch.int64)


# ----------------------------------------------------------------------------------------------------------------
# padding and separable filtering with scipy/OpenCV border semantics


def fold_index(idx: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map out-of-range indices into ``[0, n)``.

    ``nearest`` repeats the edge (scipy ``nearest``, cv2 ``BORDER_REPLICATE``); ``reflect`` is scipy's
    half-sample symmetric ``d c b a | a b c d`` (numpy ``symmetric``); ``mirror`` is ``d c b | a b c d``
    (scipy ``mirror``, cv2 ``BORDER_REFLECT_101``, torch ``reflect``). Works for any pad width.
    """
    if mode == "nearest":
        return idx.clamp(0, n - 1)
    if n == 1:
        return torch.zeros_like(idx)
    if mode == "reflect":
        period = 2 * n
        m = torch.remainder(idx, period)
        return torch.where(m >= n, period - 1 - m, m)
    if mode == "mirror":
        period = 2 * n - 2
        m = torch.remainder(idx, period)
        return torch.where(m >= n, period - m, m)
    raise ValueError(f"unknown border mode {mode!r}")


def pad_axis(x: torch.Tensor, dim: int, before: int, after: int, mode: str) -> torch.Tensor:
    n = x.shape[dim]
    idx = fold_index(torch.arange(-before, n + after, device=x.device), n, mode)
    return x.index_select(dim, idx)


@functools.lru_cache(maxsize=256)
def _gaussian_kernel1d(sigma: float, truncate: float) -> torch.Tensor:
    # scipy.ndimage._gaussian_kernel1d: radius = int(truncate * sigma + 0.5), weights exp(-x^2 / 2 sigma^2) / sum.
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / float(sigma) ** 2 * x**2)
    return torch.from_numpy(phi / phi.sum())


@functools.lru_cache(maxsize=256)
def filter_matrix(n: int, kernel: tuple[float, ...], mode: str) -> torch.Tensor:
    """The ``n x n`` matrix of correlating a length-``n`` signal with ``kernel`` under border ``mode``.

    Folding the border into the matrix turns any 1-D filter, whatever its length (elastic's sigma-170
    Gaussian spans 1,025 taps on a 224-pixel row), into one dense matrix product (a fast GEMM on CPU and GPU).
    """
    k = np.asarray(kernel, dtype=np.float64)
    r = (len(k) - 1) // 2
    rows = np.repeat(np.arange(n), len(k))
    taps = np.tile(np.arange(len(k)), n)
    cols = fold_index(torch.from_numpy(rows + taps - r), n, mode).numpy()
    mat = np.zeros((n, n), dtype=np.float64)
    np.add.at(mat, (rows, cols), k[taps])
    return torch.from_numpy(mat)


Blocks = list[tuple[int, int, int, int, torch.Tensor]]


def band_blocks(mat: torch.Tensor, size: int, device: str, dtype: torch.dtype) -> Blocks:
    """An ``n_out x n_in`` matrix cut into row blocks ``(o0, o1, i0, i1, M[o0:o1, i0:i1])`` of ``size`` rows,
    ``[i0, i1)`` the input columns the block's outputs read.

    For a band matrix (a short filter, a resampling), each block reads only a window a little wider than
    itself, which skips most of the dense product's zeros. When the windows cover most of the matrix anyway
    (a long kernel, a short signal) this is a single block, the dense matrix.
    """
    n_out, n_in = mat.shape
    size = min(size, n_out)
    blocks = []
    for o0 in range(0, n_out, size):
        o1 = min(n_out, o0 + size)
        cols = (mat[o0:o1] != 0).any(0).nonzero().squeeze(1)
        i0, i1 = (int(cols.min()), int(cols.max()) + 1) if cols.numel() else (0, 1)
        blocks.append((o0, o1, i0, i1))
    if sum((o1 - o0) * (i1 - i0) for o0, o1, i0, i1 in blocks) > 0.6 * n_out * n_in:
        blocks = [(0, n_out, 0, n_in)]
    return [(o0, o1, i0, i1, mat[o0:o1, i0:i1].to(device=device, dtype=dtype)) for o0, o1, i0, i1 in blocks]


@functools.lru_cache(maxsize=256)
def filter_blocks(n: int, kernel: tuple[float, ...], mode: str, device: str, dtype: torch.dtype) -> Blocks:
    """:func:`filter_matrix` as :func:`band_blocks` of about four kernel radii."""
    radius = (len(kernel) - 1) // 2
    return band_blocks(filter_matrix(n, kernel, mode), max(4 * radius, 28), device, dtype)


def filter_last(x: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """Apply a :func:`band_blocks` matrix along the last dim of ``x``."""
    if len(blocks) == 1:
        return torch.matmul(x, blocks[0][4].T)
    out = torch.empty((*x.shape[:-1], blocks[-1][1]), dtype=x.dtype, device=x.device)
    for o0, o1, i0, i1, m in blocks:
        torch.matmul(x[..., i0:i1], m.T, out=out[..., o0:o1])
    return out


def filter_rows(x: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """Apply a :func:`band_blocks` matrix along the second-to-last dim of ``x``."""
    if len(blocks) == 1:
        return torch.matmul(blocks[0][4], x)
    out = torch.empty((*x.shape[:-2], blocks[-1][1], x.shape[-1]), dtype=x.dtype, device=x.device)
    for o0, o1, i0, i1, m in blocks:
        torch.matmul(m, x[..., i0:i1, :], out=out[..., o0:o1, :])
    return out


def gaussian_filter(x: torch.Tensor, sigma: float, *, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """``skimage.filters.gaussian`` over the last two dims (channels filtered independently).

    Separable: one banded matrix product per axis (:func:`filter_blocks`), in ``x``'s dtype.
    """
    k = tuple(_gaussian_kernel1d(float(sigma), float(truncate)).tolist())
    dev = str(x.device)
    x = filter_last(x, filter_blocks(x.shape[-1], k, mode, dev, x.dtype))
    return filter_rows(x, filter_blocks(x.shape[-2], k, mode, dev, x.dtype))


def filter2d(x: torch.Tensor, kernel: torch.Tensor, *, mode: str = "mirror") -> torch.Tensor:
    """``cv2.filter2D(x, -1, kernel)`` per channel of an ``N x C x H x W`` batch (reflect-101 border).

    Large kernels go through the FFT (as OpenCV does for kernels from 11x11 up).
    """
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    xp = pad_axis(pad_axis(x, -2, kh // 2, kh // 2, mode), -1, kw // 2, kw // 2, mode)
    k = kernel.to(device=x.device, dtype=x.dtype)
    if kh * kw < 50:
        return F.conv2d(xp.reshape(n * c, 1, *xp.shape[-2:]), k.view(1, 1, kh, kw)).view(n, c, h, w)
    size = xp.shape[-2:]
    spec = torch.fft.rfft2(xp, s=size) * torch.fft.rfft2(k.flip(0, 1), s=size)
    out = torch.fft.irfft2(spec, s=size)
    return out[..., kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w].contiguous()


# ----------------------------------------------------------------------------------------------------------------
# colour


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``skimage.color.rgb2hsv`` for ``N x 3 x H x W`` (hue in [0, 1))."""
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = v - x.amin(1)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    s = torch.where(delta == 0, torch.zeros_like(v), delta / torch.where(v == 0, torch.ones_like(v), v))
    # skimage assigns red, then green, then blue: the last channel equal to the max wins.
    h = torch.where(b == v, 4.0 + (r - g) / safe, torch.where(g == v, 2.0 + (b - r) / safe, (g - b) / safe))
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """``skimage.color.hsv2rgb`` for ``N x 3 x H x W``."""
    h, s, v = x.unbind(1)
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    hi = torch.remainder(hi, 6).long()
    choices = torch.stack(
        [
            torch.stack([v, t, p], 1),
            torch.stack([q, v, p], 1),
            torch.stack([p, v, t], 1),
            torch.stack([p, q, v], 1),
            torch.stack([t, p, v], 1),
            torch.stack([v, p, q], 1),
        ],
        0,
    )
    idx = hi.unsqueeze(0).unsqueeze(2).expand(1, -1, 3, -1, -1)
    return torch.gather(choices, 0, idx).squeeze(0)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """``cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)`` on float images: ``N x 1 x H x W``."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def as_rgb(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Grey ``N x 1 x H x W`` images as three equal channels (and a flag to undo it)."""
    return (x.expand(-1, 3, -1, -1), True) if x.shape[1] == 1 else (x, False)


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest of the 256 levels an 8-bit image can hold."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def to_uint8_hwc(img: torch.Tensor) -> np.ndarray:
    """One ``C x H x W`` float image in [0, 1] -> ``H x W x C`` (or ``H x W``) uint8 numpy array."""
    arr = torch.round(img.detach().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
    return arr[..., 0] if arr.shape[2] == 1 else arr


def from_uint8_hwc(arr: np.ndarray, channels: int) -> torch.Tensor:
    """``H x W [x C]`` uint8 -> ``C x H x W`` float in [0, 1] with ``channels`` channels."""
    if arr.ndim == 2:
        arr = arr[..., None]
    t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float() / 255
    if t.shape[0] != channels:
        t = t[:1].expand(channels, -1, -1) if channels == 3 else rgb_to_gray(t[None])[0]
    return t


# ----------------------------------------------------------------------------------------------------------------
# geometry


def clipped_zoom(x: torch.Tensor, zoom_factor: float) -> torch.Tensor:
    """Zoom into the centre of ``N x C x H x W`` images by ``zoom_factor`` and trim back to ``H x W``.

    As the original ``clipped_zoom``: crop ``ceil(H / z)`` centre pixels, ``scipy.ndimage.zoom(order=1)``
    (an align-corners bilinear resize to ``round(ch * z)``), then trim the extra pixels around the centre.
    """
    h, w = x.shape[-2:]
    ch, cw = int(np.ceil(h / zoom_factor)), int(np.ceil(w / zoom_factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    out_h, out_w = int(round(ch * zoom_factor)), int(round(cw * zoom_factor))
    z = F.interpolate(crop, size=(out_h, out_w), mode="bilinear", align_corners=True)
    th, tw = (out_h - h) // 2, (out_w - w) // 2
    return z[..., th : th + h, tw : tw + w]


def bilinear_sample(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample ``N x C x H x W`` at float pixel coordinates ``ys``/``xs`` (``N x H' x W'``), bilinear.

    ``mode`` ``reflect`` is ``scipy.ndimage.map_coordinates(order=1, mode='reflect')``, which is exactly
    ``grid_sample``'s ``reflection`` padding without corner alignment (half-sample symmetric, then clipped);
    ``mirror`` is OpenCV's ``BORDER_REFLECT_101`` as ``cv2.warpAffine`` uses it (the image is padded first).
    """
    n, c, h, w = x.shape
    if mode == "mirror":  # pad with reflect-101 far enough that every tap lands inside, then sample plainly
        m = int(max(float(-ys.min()), float(ys.max()) - (h - 1), float(-xs.min()), float(xs.max()) - (w - 1), 0)) + 2
        x = pad_axis(pad_axis(x, -2, m, m, "mirror"), -1, m, m, "mirror")
        ys, xs, h, w = ys + m, xs + m, h + 2 * m, w + 2 * m
    elif mode != "reflect":
        raise ValueError(f"unknown sampling border mode {mode!r}")
    grid = torch.stack([(2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1], -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# ----------------------------------------------------------------------------------------------------------------
# motion blur with a line kernel (imagecorruptions' ImageMagick-free version of MagickMotionBlurImage)


def motion_kernel_shifts(radius: int, sigma: float, angle_deg: float, h: int, w: int) -> list[tuple[float, int, int]]:
    """(weight, dy, dx) taps of the one-sided Gaussian line kernel, as imagecorruptions' ``_motion_blur``.

    The kernel has ``2 * radius + 1`` taps with weights ``exp(-i^2 / 2 sigma^2)`` normalised to sum 1; tap ``i``
    shifts the image by ``i`` pixels along ``angle``. Taps past the image border are dropped (not renormalised).
    """
    width = 2 * radius + 1
    k = np.exp(-(np.arange(width, dtype=np.float64) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    k = k / k.sum()
    py, px = width * np.sin(np.deg2rad(angle_deg)), width * np.cos(np.deg2rad(angle_deg))
    hyp = math.hypot(py, px)
    taps = []
    for i in range(width):
        dy = -math.ceil((i * py) / hyp - 0.5)
        dx = -math.ceil((i * px) / hyp - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break
        taps.append((float(k[i]), dy, dx))
    return taps


def motion_blur_batch(x: torch.Tensor, radius: int, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``N x C x H x W`` along its own angle (edge pixels repeat, like the original shift)."""
    n, c, h, w = x.shape
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for i, angle in enumerate(angles_deg.tolist()):
        taps = motion_kernel_shifts(radius, sigma, float(angle), h, w)
        p = max(max(abs(dy), abs(dx)) for _, dy, dx in taps)
        xp = F.pad(x[i : i + 1], (p, p, p, p), mode="replicate")[0] if p else x[i]
        weight, dy, dx = taps[0]
        torch.mul(xp[:, p - dy : p - dy + h, p - dx : p - dx + w], weight, out=out[i])
        for weight, dy, dx in taps[1:]:  # shifted[r, c] = x[clamp(r - dy), clamp(c - dx)]
            out[i].add_(xp[:, p - dy : p - dy + h, p - dx : p - dx + w], alpha=weight)
    return out


# ----------------------------------------------------------------------------------------------------------------
# plasma fractal (diamond-square), used by fog


def next_power_of_2(x: int) -> int:
    return 1 if x == 0 else 2 ** (x - 1).bit_length()


def plasma_draw_shapes(mapsize: int) -> list[tuple[int, int]]:
    """Shapes of the uniform draws diamond-square makes, in order (3 per level)."""
    shapes = []
    step = mapsize
    while step >= 2:
        k = mapsize // step
        shapes += [(k, k)] * 3
        step //= 2
    return shapes


def plasma_fractal(
    draws: list[torch.Tensor], mapsize: int, wibbledecay: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Batched diamond-square height map in [0, 1] (the original ``plasma_fractal``), ``N x M x M``.

    ``draws`` are the uniform [0, 1) numbers, one ``N x k x k`` tensor per draw of ``plasma_draw_shapes``;
    the original draws ``wibble * uniform(-wibble, wibble)`` for each.
    """
    n = draws[0].shape[0]
    dev = draws[0].device
    # float32 is plenty: the map is rescaled to [0, 1] at the end (|values| < 1e5, relative error ~1e-7)
    m = torch.zeros(n, mapsize, mapsize, dtype=dtype, device=dev)
    step = mapsize
    wibble = 100.0
    it = iter(draws)

    def wibbled_mean(a: torch.Tensor) -> torch.Tensor:  # a / 4 + wibble * uniform(-wibble, wibble), in place
        u = next(it).to(device=dev, dtype=dtype)
        return a.mul_(0.25).add_(u, alpha=2 * wibble * wibble).sub_(wibble * wibble)

    while step >= 2:
        half = step // 2
        corner = m[:, 0:mapsize:step, 0:mapsize:step]
        acc = corner + torch.roll(corner, -1, 1)
        acc = acc.add_(torch.roll(acc, -1, 2))
        m[:, half:mapsize:step, half:mapsize:step] = wibbled_mean(acc)
        dr = m[:, half:mapsize:step, half:mapsize:step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        lt = (dr + torch.roll(dr, 1, 1)).add_(ul).add_(torch.roll(ul, -1, 2))
        m[:, 0:mapsize:step, half:mapsize:step] = wibbled_mean(lt)
        tt = (dr + torch.roll(dr, 1, 2)).add_(ul).add_(torch.roll(ul, -1, 1))
        m[:, half:mapsize:step, 0:mapsize:step] = wibbled_mean(tt)
        step //= 2
        wibble /= wibbledecay
    m = m.sub_(m.amin((1, 2), keepdim=True))
    return m.div_(m.amax((1, 2), keepdim=True))


# ----------------------------------------------------------------------------------------------------------------
# PIL-style resampling as a matrix (used by pixelate: PIL's BOX filter, batched)


@functools.lru_cache(maxsize=64)
def pil_box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """The ``n_out x n_in`` matrix of PIL's ``Image.BOX`` resize along one axis (ImagingResample coefficients)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    mat = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        xs = np.arange(xmin, xmax)
        t = (xs - center + 0.5) / filterscale
        wts = ((t >= -0.5) & (t < 0.5)).astype(np.float64)
        if wts.sum() > 0:
            mat[i, xmin:xmax] = wts / wts.sum()
    return torch.from_numpy(mat)


@functools.lru_cache(maxsize=64)
def pil_box_blocks(n_in: int, n_out: int, device: str, dtype: torch.dtype) -> Blocks:
    """:func:`pil_box_matrix` as :func:`band_blocks`."""
    return band_blocks(pil_box_matrix(n_in, n_out), 32, device, dtype)


def pil_box_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``PIL.Image.resize(size, Image.BOX)`` on ``N x C x H x W`` floats (no 8-bit rounding)."""
    dev = str(x.device)
    x = filter_last(x, pil_box_blocks(x.shape[-1], size[1], dev, x.dtype))
    return filter_rows(x, pil_box_blocks(x.shape[-2], size[0], dev, x.dtype))
