"""Parity of our batched corruptions with the reference formulas on 224x224 natural images.

Deterministic corruptions are compared with imagecorruptions' functions directly; random ones get the same
random numbers injected (by replacing the numpy calls imagecorruptions makes) and must give the same output,
within 2/255 per pixel. Where imagecorruptions is broken on current libraries (``gaussian``'s removed
``multichannel`` keyword, ``np.float_``) we apply the upstream master fix; where it departs from Hendrycks'
ImageNet-C generator (clipped-zoom trim, pixelate's upsampling, elastic transform) we compare with the
original formula.
"""

from __future__ import annotations

import warnings
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from robustvision.noises import corruptions as C
from robustvision.noises.corruptions_noise import POISSON_TABLE_BINS

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import imagecorruptions.corruptions as ic
    except Exception as err:  # ImportError, or pkg_resources missing on setuptools >= 81
        ic = None
        _IC_ERROR = (
            f"imagecorruptions is not importable ({type(err).__name__}: {err}); "
            "pip install imagecorruptions 'setuptools<81'"
        )

pytestmark = pytest.mark.skipif(ic is None, reason=_IC_ERROR if ic is None else "")

TOL = 2 / 255 + 1e-6


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Two 224x224 RGB uint8 photographs shipped with scikit-image."""
    from skimage import data

    out = []
    for img in (data.astronaut(), data.chelsea()):
        side = min(img.shape[:2])
        crop = img[:side, :side]
        out.append(np.asarray(Image.fromarray(crop).resize((224, 224), Image.BILINEAR)))
    return np.stack(out)


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255


def ours(cls, severity, batch: np.ndarray, params=None) -> np.ndarray:
    noise = cls(severity, profile="imagenet")
    x = to_tensor(batch)
    if params is None:
        params = noise.sample_params(x.shape, torch.Generator().manual_seed(0))
    return noise.apply(x, params).permute(0, 2, 3, 1).numpy()


def assert_close(a: np.ndarray, b: np.ndarray, what: str) -> None:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    assert diff.max() <= TOL, f"{what}: max |diff| = {diff.max() * 255:.3f}/255 (mean {diff.mean() * 255:.4f}/255)"


def centre_clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    """Hendrycks' ImageNet-C clipped_zoom (centre trim), per axis; imagecorruptions trims from the top-left."""
    from scipy.ndimage import zoom as scizoom

    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / zoom_factor)), int(np.ceil(w / zoom_factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    out = scizoom(img[top : top + ch, left : left + cw], (zoom_factor, zoom_factor, 1), order=1)
    th, tw = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
    return out[th : th + h, tw : tw + w]


@pytest.fixture
def fixed_gaussian(monkeypatch):
    """imagecorruptions' glass/gaussian blur with the upstream fix (``channel_axis`` for ``multichannel``)."""
    from skimage.filters import gaussian

    def patched(image, sigma=1, multichannel=None, **kw):
        if multichannel:
            kw["channel_axis"] = -1
        return gaussian(image, sigma=sigma, **kw)

    monkeypatch.setattr(ic, "gaussian", patched)


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturate", "defocus_blur", "jpeg_compression"])
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_deterministic_matches_imagecorruptions(images, name, severity):
    ref_fn = getattr(ic, name)
    refs = []
    for img in images:
        arg = Image.fromarray(img) if name == "jpeg_compression" else img
        refs.append(np.asarray(ref_fn(arg, severity), dtype=np.float64) / 255)
    assert_close(ours(C.CORRUPTION_CLASSES[name], severity, images), np.stack(refs), name)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_zoom_blur_matches_original_formula(images, severity, monkeypatch):
    monkeypatch.setattr(ic, "clipped_zoom", centre_clipped_zoom)
    refs = np.stack([ic.zoom_blur(img, severity) / 255 for img in images])
    assert_close(ours(C.ZoomBlur, severity, images), refs, "zoom_blur")


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_pixelate_matches_original_formula(images, severity):
    c = C.Pixelate.table["imagenet"][severity - 1]
    refs = []
    for img in images:
        small = Image.fromarray(img).resize((int(224 * c), int(224 * c)), Image.BOX)
        refs.append(np.asarray(small.resize((224, 224), Image.BOX)) / 255)
    assert_close(ours(C.Pixelate, severity, images), np.stack(refs), "pixelate")


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_blur_matches_fixed_imagecorruptions(images, severity, fixed_gaussian):
    refs = np.stack([ic.gaussian_blur(img, severity) / 255 for img in images])
    assert_close(ours(C.GaussianBlur, severity, images), refs, "gaussian_blur")


class _Feed:
    """Replaces a numpy random call: returns the prepared arrays in order."""

    def __init__(self, values):
        self.values = deque(values)

    def __call__(self, *args, **kwargs):
        return self.values.popleft()


@pytest.mark.parametrize("name", ["gaussian_noise", "speckle_noise"])
@pytest.mark.parametrize("severity", [1, 5])
def test_gaussian_draws_injected(images, name, severity, monkeypatch):
    cls = C.CORRUPTION_CLASSES[name]
    x = to_tensor(images)
    params = cls(severity).sample_params(x.shape, torch.Generator().manual_seed(1))
    scale = cls.table["imagenet"][severity - 1]
    noise = params["noise"].permute(0, 2, 3, 1).double().numpy()
    monkeypatch.setattr(ic.np.random, "normal", _Feed([n * scale for n in noise]))
    refs = np.stack([getattr(ic, name)(img, severity) / 255 for img in images])
    assert_close(ours(cls, severity, images, params), refs, name)


@pytest.mark.parametrize("severity", [1, 5])
def test_shot_noise_draws_injected(images, severity, monkeypatch):
    x = to_tensor(images)
    params = C.ShotNoise(severity).sample_params(x.shape, torch.Generator().manual_seed(2))
    seeds = deque(params["seeds"].tolist())
    bins = POISSON_TABLE_BINS

    def poisson(lam):
        # our exact inversion on the 8-bit grid, independently: scipy's Poisson quantile of the same uniforms
        from scipy import stats

        g = torch.Generator().manual_seed(int(seeds.popleft()))
        u = torch.empty((lam.shape[2], *lam.shape[:2])).uniform_(0, bins, generator=g) / bins
        return stats.poisson.ppf(u.permute(1, 2, 0).double().numpy(), lam)

    monkeypatch.setattr(ic.np.random, "poisson", poisson)
    refs = np.stack([ic.shot_noise(img, severity) / 255 for img in images])
    assert_close(ours(C.ShotNoise, severity, images, params), refs, "shot_noise")


@pytest.mark.parametrize("severity", [1, 5])
def test_impulse_noise_draws_injected(images, severity, monkeypatch):
    x = to_tensor(images)
    noise = C.ImpulseNoise(severity)
    params = noise.sample_params(x.shape, torch.Generator().manual_seed(3))
    c = C.ImpulseNoise.table["imagenet"][severity - 1]
    # skimage's two per-value draws, as our flipped indices and salt bits decide them
    flip = torch.ones(x.numel(), dtype=torch.float64)
    flip[params["flip_index"]] = c / 2
    salt = torch.ones(x.numel(), dtype=torch.float64)
    salt[params["flip_index"][params["flip_salt"]]] = 0.0
    flip, salt = flip.view(x.shape), salt.view(x.shape)
    assert 0.8 * c < float((flip <= c).double().mean()) < 1.2 * c
    assert 0.4 < float(params["flip_salt"].double().mean()) < 0.6
    draws = deque()
    for i in range(len(images)):
        draws.append(flip[i].permute(1, 2, 0).numpy())  # skimage's flip draw
        draws.append(salt[i].permute(1, 2, 0).numpy())  # its salt draw

    class FakeRng:
        def random(self, shape):
            return draws.popleft()

    monkeypatch.setattr(np.random, "default_rng", lambda seed=None: FakeRng())
    refs = np.stack([ic.impulse_noise(img, severity) / 255 for img in images])
    assert_close(ours(C.ImpulseNoise, severity, images, params), refs, "impulse_noise")
    # the per-value replay path gives the same images
    replay = noise.apply(x, {"flip": flip.float(), "salt": salt.float()})
    assert torch.equal(replay, noise.apply(x, params))


@pytest.mark.parametrize("severity", [1, 3])
def test_glass_blur_offsets_injected(images, severity, monkeypatch, fixed_gaussian):
    batch = images[:1]
    x = to_tensor(batch)
    params = C.GlassBlur(severity).sample_params(x.shape, torch.Generator().manual_seed(4))
    offsets = params["offsets"][0].reshape(-1, 2).numpy()
    monkeypatch.setattr(ic.np.random, "randint", _Feed(list(offsets)))
    refs = np.stack([ic.glass_blur(img, severity) / 255 for img in batch])
    assert_close(ours(C.GlassBlur, severity, batch, params), refs, "glass_blur")


@pytest.mark.parametrize("severity", [1, 5])
def test_motion_blur_angle_injected(images, severity, monkeypatch):
    x = to_tensor(images)
    params = C.MotionBlur(severity).sample_params(x.shape, torch.Generator().manual_seed(5))
    monkeypatch.setattr(ic.np.random, "uniform", _Feed(params["angle"].tolist()))
    refs = np.stack([ic.motion_blur(img, severity) / 255 for img in images])
    assert_close(ours(C.MotionBlur, severity, images, params), refs, "motion_blur")


@pytest.mark.parametrize("severity", [1, 4])
def test_snow_draws_injected(images, severity, monkeypatch):
    x = to_tensor(images)
    params = C.Snow(severity).sample_params(x.shape, torch.Generator().manual_seed(6))
    mean, std = C.Snow.table["imagenet"][severity - 1][:2]
    monkeypatch.setattr(ic, "clipped_zoom", centre_clipped_zoom)
    monkeypatch.setattr(ic.np.random, "normal", _Feed([f[0].double().numpy() * std + mean for f in params["flakes"]]))
    monkeypatch.setattr(ic.np.random, "uniform", _Feed(params["angle"].tolist()))
    refs = np.stack([ic.snow(img, severity) / 255 for img in images])
    assert_close(ours(C.Snow, severity, images, params), refs, "snow")


@pytest.mark.parametrize("severity", [1, 5])
def test_fog_plasma_draws_injected(images, severity, monkeypatch):
    x = to_tensor(images)
    params = C.Fog(severity).sample_params(x.shape, torch.Generator().manual_seed(7))
    monkeypatch.setattr(np, "float_", np.float64, raising=False)  # the upstream fix for numpy >= 2
    per_image = [[d[i].numpy() for d in params["plasma_draws"]] for i in range(len(images))]
    feed = deque(u for draws in per_image for u in draws)
    monkeypatch.setattr(ic.np.random, "uniform", lambda low, high, shape: low + (high - low) * feed.popleft())
    refs = np.stack([ic.fog(img, severity) / 255 for img in images])
    assert_close(ours(C.Fog, severity, images, params), refs, "fog")


@pytest.mark.parametrize("severity", [1, 5])
def test_frost_with_real_texture_injected(images, severity, monkeypatch):
    starts = (13, 29)
    monkeypatch.setattr(ic.np.random, "randint", _Feed([0, *starts] * len(images)))
    refs = np.stack([ic.frost(img, severity) / 255 for img in images])
    frost_png = Path(ic.__file__).parent / "frost" / "frost1.png"
    photo = cv2.imread(str(frost_png))
    size = (int(np.ceil(photo.shape[1] * 1.1)), int(np.ceil(photo.shape[0] * 1.1)))
    crop = cv2.resize(photo, dsize=size, interpolation=cv2.INTER_CUBIC)[
        starts[0] : starts[0] + 224, starts[1] : starts[1] + 224, ::-1
    ]
    texture = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div(255)
    params = {"texture": texture.unsqueeze(0).expand(len(images), -1, -1, -1)}
    assert_close(ours(C.Frost, severity, images, params), refs, "frost")


@pytest.mark.parametrize("severity", [1, 3, 4, 5])
def test_spatter_draws_injected(images, severity, monkeypatch):
    x = to_tensor(images)
    params = C.Spatter(severity).sample_params(x.shape, torch.Generator().manual_seed(8))
    mean, std = C.Spatter.table["imagenet"][severity - 1][:2]
    monkeypatch.setattr(ic.np.random, "normal", _Feed([liq[0].numpy() * std + mean for liq in params["liquid"]]))
    refs = np.stack([np.asarray(ic.spatter(Image.fromarray(img), severity)) / 255 for img in images])
    assert_close(ours(C.Spatter, severity, images, params), refs, "spatter")


def original_elastic(image: np.ndarray, c, affine_u: np.ndarray, dx_u: np.ndarray, dy_u: np.ndarray) -> np.ndarray:
    """Hendrycks' ImageNet-C elastic transform (random affine + smooth displacement) with given uniforms."""
    from scipy.ndimage import map_coordinates
    from skimage.filters import gaussian

    image = np.array(image, dtype=np.float32) / 255.0
    shape = image.shape
    center = np.float32(shape[:2]) // 2
    sq = min(shape[:2]) // 3
    pts1 = np.float32([center + sq, [center[0] + sq, center[1] - sq], center - sq])
    pts2 = pts1 + (-c[2] + 2 * c[2] * affine_u).astype(np.float32)
    m = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, m, shape[:2][::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (gaussian(-1 + 2 * dx_u, c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)[..., None]
    dy = (gaussian(-1 + 2 * dy_u, c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)[..., None]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    idx = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(map_coordinates(image, idx, order=1, mode="reflect").reshape(shape), 0, 1)


@pytest.mark.parametrize("severity", [1, 2, 5])
def test_elastic_matches_original_formula(images, severity):
    x = to_tensor(images)
    params = C.ElasticTransform(severity).sample_params(x.shape, torch.Generator().manual_seed(9))
    c = C.ElasticTransform.table["imagenet"][severity - 1]
    refs = np.stack(
        [
            original_elastic(img, c, params["affine"][i].numpy(), params["dx"][i].numpy(), params["dy"][i].numpy())
            for i, img in enumerate(images)
        ]
    )
    assert_close(ours(C.ElasticTransform, severity, images, params), refs, "elastic_transform")


def _impulse_statistics(before: np.ndarray, after: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-element statistics of salt-and-pepper outputs (``N x H x W x C`` in [0, 1], no input value at 0 or 1)."""
    changed = after != before
    hits = changed.sum(-1).ravel()  # flipped channels per pixel
    return {
        "changed": float(changed.mean()),
        "to_0": float((after == 0).mean()),
        "to_1": float((after == 1).mean()),
        "other": float((changed & (after != 0) & (after != 1)).mean()),  # a change to anything but 0 or 1
        "per_channel": changed.mean((0, 1, 2)),
        "hits": np.bincount(hits, minlength=4) / hits.size,
    }


@pytest.mark.parametrize("severity", [3, 5])
def test_impulse_noise_statistics_match_the_reference(images, severity):
    """Ours and imagecorruptions' impulse_noise (scikit-image ``random_noise(mode='s&p', amount=c)``, seeded) on a
    fixed photo: every element (pixel x channel) flips independently with probability c (the ImageNet-C table),
    half to 0, half to 1, so the channels flipped per pixel are Binomial(3, c)."""
    from math import comb

    c = C.ImpulseNoise.table["imagenet"][severity - 1]
    assert C.ImpulseNoise.table["imagenet"] == (0.03, 0.06, 0.09, 0.17, 0.27)  # make_imagenet_c.py's table
    # no value at 0 or 1 before the noise, so a flipped element is always a changed one
    photo = np.clip(images[:1], 1, 254)
    before = np.repeat(photo, 4, 0).astype(np.float64) / 255  # four draws of the same photo
    noisy = C.ImpulseNoise(severity, profile="imagenet")(
        torch.from_numpy(before).permute(0, 3, 1, 2).float(), generator=torch.Generator().manual_seed(0)
    )
    mine = _impulse_statistics(before.astype(np.float32), noisy.permute(0, 2, 3, 1).numpy())
    real = ic.sk.util.random_noise
    rng = np.random.default_rng(0)
    ref_out = np.stack([np.clip(real(img, mode="s&p", amount=c, rng=rng), 0, 1) for img in before])
    ref = _impulse_statistics(before, ref_out)
    n = before.size
    tol = 5 * np.sqrt(c * (1 - c) / n)  # five standard deviations of a fraction of n Bernoulli(c) elements
    expected_hits = np.array([comb(3, k) * c**k * (1 - c) ** (3 - k) for k in range(4)])
    for name, s in (("ours", mine), ("reference", ref)):
        assert abs(s["changed"] - c) < tol, (name, s["changed"], c)
        assert abs(s["to_0"] - c / 2) < tol and abs(s["to_1"] - c / 2) < tol, (name, s["to_0"], s["to_1"])
        assert s["other"] == 0.0, name  # flipped values are exactly 0 or 1
        assert np.abs(s["per_channel"] - c).max() < 3 * tol, (name, s["per_channel"])
        assert np.abs(s["hits"] - expected_hits).max() < 3 * tol, (name, s["hits"], expected_hits)
    for key in ("changed", "to_0", "to_1"):
        assert abs(mine[key] - ref[key]) < 2 * tol, (key, mine[key], ref[key])
    assert np.abs(mine["hits"] - ref["hits"]).max() < 3 * tol


def test_corruption_agreement_seeds_the_reference_impulse_noise(images, repo_root):
    """The benchmark's reference impulse_noise follows ``np.random.seed`` (scikit-image >= 0.19 would not)."""
    import importlib
    import sys

    bench = repo_root / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        agreement = importlib.import_module("corruption_agreement")
    finally:
        sys.path.remove(str(bench))
    seeded = agreement.seeded_random_noise(ic.sk.util.random_noise)
    img = images[0].astype(np.float64) / 255
    np.random.seed(5)
    a = seeded(img, mode="s&p", amount=0.09)
    np.random.seed(5)
    b = seeded(img, mode="s&p", amount=0.09)
    np.random.seed(6)
    other = seeded(img, mode="s&p", amount=0.09)
    assert np.array_equal(a, b) and not np.array_equal(a, other)
    assert agreement.seeded_random_noise(seeded) is seeded  # wrapping twice changes nothing
