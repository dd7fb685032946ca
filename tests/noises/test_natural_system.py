"""Contract tests over every natural and system noise, plus the corruption helpers, precision and ImageNet-P."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from PIL import Image

from robustvision.noises import NOISES, create_noise, list_noises
from robustvision.noises import corruptions as C
from robustvision.noises.corruption_ops import resolve_profile
from robustvision.noises.perturbations import (
    PERTURBATIONS,
    flip_probability,
    flip_rate,
    list_perturbations,
    perturbation_sequence,
)
from robustvision.noises.precision import PrecisionNoise, precision_variant

NATURAL = list_noises(kind="natural")
# System noises that act on image tensors; the image-pipeline ones (pipeline_*) read the original files instead and
# are tested in tests/bench/test_imagenet.py.
SYSTEM = [n for n in list_noises(kind="system") if not n.startswith("pipeline_")]
HAS_AV = importlib.util.find_spec("av") is not None


def _photos(side: int) -> torch.Tensor:
    from skimage import data

    out = []
    for img in (data.astronaut(), data.chelsea(), data.coffee()):
        s = min(img.shape[:2])
        out.append(np.asarray(Image.fromarray(img[:s, :s]).resize((side, side), Image.BILINEAR)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def photos32() -> torch.Tensor:
    return _photos(32)


@pytest.fixture(scope="module")
def photos64() -> torch.Tensor:
    return _photos(64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _skip_unavailable(name: str) -> None:
    if name == "decode_ffmpeg" and not HAS_AV:
        pytest.skip("decode_ffmpeg needs PyAV (pip install av)")


def test_registry_holds_all_families():
    assert set(C.ALL_CORRUPTIONS) == set(NATURAL)
    assert len(NATURAL) == 19
    assert {"decode_pil", "decode_opencv", "decode_torchvision", "decode_ffmpeg"} <= set(SYSTEM)
    assert len([n for n in SYSTEM if n.startswith("resize_pil_")]) == 6
    assert len([n for n in SYSTEM if n.startswith("resize_opencv_")]) == 5
    assert {"precision_fp16", "precision_bf16", "precision_int8"} <= set(SYSTEM)
    for name in NATURAL + SYSTEM:
        noise = create_noise(name)
        assert noise.name == name
        assert noise.kind.value == NOISES.meta(name)["kind"].value


@pytest.mark.parametrize("name", NATURAL + SYSTEM)
@pytest.mark.parametrize("channels", [3, 1])
def test_contract_shape_dtype_range_determinism(name, channels, photos32):
    _skip_unavailable(name)
    x = photos32 if channels == 3 else photos32.mean(1, keepdim=True)
    noise = create_noise(name, severity=3) if name in NATURAL else create_noise(name)
    a = noise(x, generator=gen(1))
    b = noise(x, generator=gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.isfinite(a).all()
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b), "the same generator must give the same output"
    params = noise.sample_params(x.shape, gen(2))
    assert torch.equal(noise.apply(x, params), noise.apply(x, params)), "apply must be deterministic"


@pytest.mark.parametrize("name", NATURAL)
def test_natural_random_ones_differ_across_seeds_and_change_the_image(name, photos32):
    noise = create_noise(name, severity=3)
    a = noise(photos32, generator=gen(1))
    assert not torch.allclose(a, photos32), f"{name} left the images unchanged"
    if noise.sample_params(photos32.shape, gen(0)):  # random corruption
        assert not torch.equal(a, noise(photos32, generator=gen(2)))


@pytest.mark.parametrize("name", NATURAL)
@pytest.mark.parametrize("bad", [0, 6, -1, 2.5, True, "3"])
def test_natural_bad_severity_is_a_clear_error(name, bad):
    with pytest.raises(ValueError, match="severity must be an integer from 1 to 5"):
        create_noise(name, severity=bad)


@pytest.mark.parametrize("name", [n for n in SYSTEM])
@pytest.mark.parametrize("bad", [0, 2, 6])
def test_system_noise_has_one_setting(name, bad):
    with pytest.raises(ValueError, match="severity must be 1"):
        create_noise(name, severity=bad)


# Corruptions whose mean change grows strictly at every step of the 5 severities on these images; the others
# (e.g. glass blur's CIFAR table lowers sigma from severity 3 to 4, saturate desaturates then saturates) only
# have to differ at every step and be stronger at 5 than at 1.
MONOTONE = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "defocus_blur",
    "gaussian_blur",
    "zoom_blur",
    "contrast",
    "brightness",
    "pixelate",
    "fog",
)


@pytest.mark.parametrize("name", NATURAL)
def test_severity_changes_output_and_grows(name, photos32):
    x = photos32
    outs = [create_noise(name, severity=s)(x, generator=gen(5)) for s in range(1, 6)]
    changes = [float((out - x).abs().mean()) for out in outs]
    for s in range(4):
        assert not torch.equal(outs[s], outs[s + 1]), f"{name}: severities {s + 1} and {s + 2} give the same output"
    if name != "elastic_transform":
        # CIFAR-10-C's elastic table trades a large random affine jitter at severity 1 (2.6 px) for stronger
        # local displacement at 5; its mean absolute change falls with severity, so only "differs" applies.
        assert changes[4] > changes[0], f"{name}: severity 5 changes less than 1: {changes}"
    if name in MONOTONE:
        assert all(b > a for a, b in zip(changes[:-1], changes[1:], strict=True)), f"{name}: not monotone {changes}"


def test_profiles_and_helpers():
    assert resolve_profile("auto", (1, 3, 32, 32)) == "cifar"
    assert resolve_profile("auto", (1, 3, 64, 64)) == "cifar"
    assert resolve_profile("auto", (1, 3, 224, 224)) == "imagenet"
    assert resolve_profile("imagenet", (1, 3, 32, 32)) == "imagenet"
    with pytest.raises(ValueError, match="profile"):
        create_noise("fog", severity=1, profile="tiny")
    with pytest.raises(KeyError, match="gaussian_noise"):
        C.corrupt(torch.rand(1, 3, 32, 32), "gausian_noise")
    x = torch.rand(2, 3, 32, 32)
    # the explicit profile changes the constants: ImageNet-C's Gaussian noise is stronger than CIFAR-10-C's
    strong = C.gaussian_noise(x, 1, generator=gen(0), profile="imagenet")
    mild = C.gaussian_noise(x, 1, generator=gen(0), profile="cifar")
    assert (strong - x).abs().mean() > (mild - x).abs().mean()


def test_pure_functions_match_classes(photos32):
    for name in C.ALL_CORRUPTIONS:
        fn = getattr(C, name)
        kwargs = {"generator": gen(3)} if "generator" in fn.__code__.co_varnames else {}
        via_fn = fn(photos32, 2, **kwargs)
        via_cls = create_noise(name, severity=2)(photos32, generator=gen(3))
        assert torch.equal(via_fn, via_cls), name


def test_bad_images_are_rejected():
    with pytest.raises(ValueError, match="N x C x H x W"):
        C.fog(torch.rand(3, 32, 32), 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        C.contrast(torch.rand(1, 3, 32, 32) * 2, 1)


def test_frost_texture_resembles_the_photos():
    tex = C.frost_texture(64, 64, 64, generator=gen(0))
    assert tex.shape == (64, 3, 64, 64) and float(tex.min()) >= 0 and float(tex.max()) <= 1
    means = tex.mean((2, 3))
    assert 0.3 < float(means.mean()) < 0.8
    assert float(tex.std((2, 3)).mean()) > 0.04  # textured, not flat
    assert (means[:, 2] >= means[:, 0]).float().mean() > 0.9  # bluish like the photos


@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror"])
@pytest.mark.parametrize("sigma", [0.7, 3.0, 40.0])
def test_banded_filter_equals_the_dense_matrix(mode, sigma):
    from robustvision.noises import corruption_ops as O

    x = torch.rand(2, 3, 70, 131, dtype=torch.float64)
    k = tuple(O._gaussian_kernel1d(sigma, 4.0).tolist())
    dense = torch.matmul(torch.matmul(O.filter_matrix(70, k, mode), x), O.filter_matrix(131, k, mode).T)
    assert torch.allclose(O.gaussian_filter(x, sigma, mode=mode), dense, atol=1e-12)
    down = O.pil_box_resize(x, (29, 50))
    dense = torch.matmul(torch.matmul(O.pil_box_matrix(70, 29), x), O.pil_box_matrix(131, 50).T)
    assert down.shape == (2, 3, 29, 50) and torch.allclose(down, dense, atol=1e-12)
    up = O.pil_box_resize(down, (70, 131))
    dense_up = torch.matmul(torch.matmul(O.pil_box_matrix(29, 70), down), O.pil_box_matrix(50, 131).T)
    assert torch.allclose(up, dense_up, atol=1e-12)


@pytest.mark.parametrize("photons", [3, 12, 60, 500])
def test_poisson_table_inverts_the_cdf_exactly(photons):
    from scipy import stats

    from robustvision.noises.corruptions_noise import poisson_from_uniform

    u = torch.rand(4, 256, 300, generator=gen(photons))
    u[:, :, :4] = torch.tensor([2**-24, 0.5, 1 - 2**-24, 1 - 2**-10])  # bin edges and the far right tail
    levels = torch.arange(256, dtype=torch.float32).view(1, 256, 1).expand_as(u).contiguous()
    ours = poisson_from_uniform(levels, u, photons).double().numpy()
    ref = stats.poisson.ppf(u.double().numpy(), photons * levels.double().numpy() / 255)
    assert np.array_equal(ours, ref)


def test_shot_noise_off_the_8bit_grid_falls_back_to_torch_poisson():
    x = torch.full((2, 3, 64, 64), 0.3)  # not k / 255
    noise = create_noise("shot_noise", severity=3, profile="imagenet")
    c = noise.table["imagenet"][2]
    out = noise(x, generator=gen(0))
    counts = out * c
    assert torch.allclose(counts, counts.round(), atol=1e-4)
    assert abs(float(counts.mean()) - 0.3 * c) < 0.05 and abs(float(counts.var()) - 0.3 * c) < 0.2
    on_grid = noise(torch.full((2, 3, 64, 64), 77 / 255), generator=gen(0)) * c
    assert abs(float(on_grid.mean()) - 77 / 255 * c) < 0.05 and abs(float(on_grid.var()) - 77 / 255 * c) < 0.2


@pytest.mark.parametrize("exact_division", [True, False])
def test_8bit_grid_check_agrees_both_ways(exact_division, photos32):
    from robustvision.noises.corruptions_noise import on_8bit_grid

    def check(x):
        return on_8bit_grid(x, x.mul(255).round_(), torch.empty_like(x), exact_division=exact_division)

    grid = torch.arange(256, dtype=torch.float32).div(255).view(1, 1, 16, 16)
    assert check(grid) and check(photos32)
    assert not check(torch.full((1, 1, 4, 4), 0.3)) and not check(photos32 + 1e-4)
    nudged = grid.clone()
    nudged[0, 0, 3, 5] = torch.nextafter(nudged[0, 0, 3, 5], torch.tensor(1.0))  # one ulp off k / 255
    assert not check(nudged)
    assert not check(torch.tensor([[[[1.5, -0.2]]]]))  # off the [0, 1] grid entirely
    assert not check(torch.tensor([[[[76.5 / 255]]]]))  # between two levels (the old check let it through)


@pytest.mark.parametrize("severity", [1, 5])
def test_impulse_flips_are_independent_bernoulli(severity):
    noise = create_noise("impulse_noise", severity=severity, profile="imagenet")
    c = noise.table["imagenet"][severity - 1]
    shape = (8, 3, 64, 64)
    params = noise.sample_params(shape, gen(severity))
    index = params["flip_index"]
    total = math.prod(shape)
    assert torch.all(index[1:] > index[:-1]) and int(index[0]) >= 0 and int(index[-1]) < total
    k = index.numel()
    assert abs(k - c * total) < 5 * math.sqrt(total * c * (1 - c))
    per_channel = torch.bincount(index // (64 * 64) % 3, minlength=3).double()
    assert float((per_channel / per_channel.sum() - 1 / 3).abs().max()) < 0.02
    gaps = (index[1:] - index[:-1] - 1).double()  # geometric: mean (1 - c) / c
    assert abs(float(gaps.mean()) - (1 - c) / c) < 0.05 * (1 - c) / c
    assert abs(float(params["flip_salt"].double().mean()) - 0.5) < 0.02


def test_frost_crops_the_fixed_bank():
    from robustvision.noises.corruptions_weather import frost_bank, frost_bank_size

    bank = frost_bank(40, 48)
    assert bank.shape == (5, 3, *frost_bank_size(40, 48)) and bank.shape[-2:] == (60, 72)
    assert torch.equal(bank, frost_bank(40, 48)), "the bank is fixed"
    noise = create_noise("frost", severity=2, profile="cifar")
    _, b = noise.table["cifar"][1]
    zeros = torch.zeros(6, 3, 40, 48)
    params = noise.sample_params(zeros.shape, gen(0))
    out = noise.apply(zeros, params)
    for i in range(6):
        k, t, left = (int(params[key][i]) for key in ("photo", "top", "left"))
        expected = (b * bank[k, :, t : t + 40, left : left + 48]).clamp(0, 1)
        assert torch.allclose(out[i], expected, atol=1e-6)
    assert len(set(params["top"].tolist())) > 1 and len(set(params["photo"].tolist())) > 1  # crops vary
    grey = noise.apply(zeros[:, :1], params)
    assert grey.shape == (6, 1, 40, 48) and torch.allclose(
        grey, out.mul(torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).clamp(0, 1), atol=1e-5
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
@pytest.mark.parametrize("name", NATURAL)
def test_cuda_matches_cpu(name, photos32):
    noise = create_noise(name, severity=3)
    params = noise.sample_params(photos32.shape, gen(0))
    cpu = noise.apply(photos32, params)
    cuda = noise.apply(photos32.cuda(), params).cpu()
    assert (cpu - cuda).abs().max() < 2 / 255


# ---------------------------------------------------------------------------------------------------------------
# system noise specifics


def test_resize_settings_differ(photos64):
    outs = {n: create_noise(n)(photos64) for n in SYSTEM if n.startswith("resize_")}
    for name, out in outs.items():
        assert not torch.equal(out, photos64), name
    assert not torch.equal(outs["resize_pil_nearest"], outs["resize_pil_bilinear"])
    assert not torch.equal(outs["resize_pil_bilinear"], outs["resize_opencv_bilinear"])
    with pytest.raises(ValueError, match="interpolation"):
        create_noise("resize_pil_bilinear", interpolation="area")
    with pytest.raises(ValueError, match="scale"):
        create_noise("resize_pil_bilinear", scale=1.0)


@pytest.mark.skipif(not HAS_AV, reason="decode_ffmpeg needs PyAV (pip install av)")
def test_ffmpeg_decoder_differs_from_pil(photos64):
    pil = create_noise("decode_pil")(photos64)
    ffmpeg = create_noise("decode_ffmpeg")(photos64)
    assert not torch.equal(pil, ffmpeg)
    assert (pil - ffmpeg).abs().mean() < 8 / 255  # the same picture, decoded differently


def test_colour_and_quantisation_round_trips(photos32):
    bgr = create_noise("color_bgr")
    assert torch.equal(bgr(photos32)[:, 0], create_noise("quantize_8bit")(photos32)[:, 2])
    q = create_noise("quantize_8bit")(photos32)
    assert torch.equal(create_noise("quantize_8bit")(q), q)
    ycc = create_noise("color_ycbcr_pil")(photos32)
    assert 0 < float((ycc - q).abs().max()) <= 4 / 255  # an 8-bit round trip loses a little
    lower = create_noise("jpeg_reencode_q50")(photos32)
    higher = create_noise("jpeg_reencode_q95")(photos32)
    assert (lower - photos32).abs().mean() > (higher - photos32).abs().mean()


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 10),
    ).eval()


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
def test_precision_variants(precision, photos32):
    model = _tiny_model()
    ref = model(photos32)
    noise = create_noise(f"precision_{precision}")
    assert isinstance(noise, PrecisionNoise) and noise.wraps_model and noise.kind.value == "system"
    assert torch.equal(noise(photos32), photos32)
    wrapped = noise.wrap(model)
    out = wrapped(photos32)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.allclose(out, ref, atol=0.05, rtol=0.05)
    assert not torch.equal(out, ref), f"{precision} inference should not be bit-identical to float32"
    assert all(p.dtype == torch.float32 for p in model.parameters()), "the original model must stay float32"
    assert torch.equal(model(photos32), ref)
    with pytest.raises(ValueError, match="precision"):
        precision_variant(model, "int4")


# ---------------------------------------------------------------------------------------------------------------
# ImageNet-P sequences and flip probability


def test_flip_probability_formula():
    preds = torch.tensor([[0, 1], [0, 1], [1, 1], [1, 2], [0, 2]])  # 5 frames x 2 videos
    # consecutive: video 0 flips at frames 2 and 4, video 1 at frame 3 -> 3 flips / (2 * 4)
    assert flip_probability(preds, noise=False) == pytest.approx(3 / 8)
    # against frame 0: video 0 differs at frames 2, 3; video 1 at frames 3, 4 -> 4 / 8
    assert flip_probability(preds, noise=True) == pytest.approx(4 / 8)
    with pytest.raises(ValueError, match="T x N"):
        flip_probability(torch.tensor([[1, 2]]), noise=False)


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_sequences(name, photos32):
    seq = perturbation_sequence(photos32, name, generator=gen(0))
    spec = PERTURBATIONS[name]
    assert seq.shape == (spec.frames, *photos32.shape)
    assert torch.isfinite(seq).all() and float(seq.min()) >= 0 and float(seq.max()) <= 1
    assert torch.equal(seq, perturbation_sequence(photos32, name, generator=gen(0)))
    assert not torch.equal(seq[0], seq[-1])
    if spec.noise:
        assert torch.equal(seq[0], photos32)


def test_sequence_errors_and_flip_rate(photos32):
    with pytest.raises(KeyError, match="rotate"):
        perturbation_sequence(photos32, "rotat")
    with pytest.raises(ValueError, match="2 frames"):
        perturbation_sequence(photos32, "rotate", frames=1)
    assert len(list_perturbations()) == 13

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 3)

    class BrightnessBins(torch.nn.Module):
        def forward(self, x):  # class = mean brightness in 20 bins: flips as brightness moves
            return torch.nn.functional.one_hot((x.mean((1, 2, 3)) * 20).long().clamp(0, 19), 20).float()

    assert flip_rate(Constant(), photos32, "brightness") == 0.0
    assert flip_rate(BrightnessBins(), photos32, "brightness") > 0.0


@pytest.mark.parametrize("delta,iterations,side", [(1, 2, 9), (2, 3, 12), (4, 2, 20)])
def test_glass_permutation_equals_the_sequential_loop(delta, iterations, side):
    from robustvision.noises.corruptions_blur import _shuffle_positions, glass_permutation

    g = gen(delta)
    steps = (side - 2 * delta) ** 2
    offsets = torch.randint(-delta, delta, (3, iterations, steps, 2), generator=g)
    fast = glass_permutation(offsets, side, side, delta)
    pos = _shuffle_positions(side, side, delta).tolist()
    for i in range(3):
        img = list(range(side * side))
        for it in range(iterations):
            for p, (dx, dy) in zip(pos, offsets[i, it].tolist(), strict=True):
                img[p] = img[p + dy * side + dx]  # the original's "swap" of numpy views copies one way
        assert fast[i].tolist() == img


def test_precision_wraps_a_zoo_classifier(photos32):
    from robustvision.models import create_model

    model = create_model("lenet5", num_classes=10, image_size=32).eval()
    ref = model(photos32)
    for precision in ("fp16", "bf16", "int8"):
        wrapped = create_noise(f"precision_{precision}").wrap(model)
        assert wrapped.family == model.family and wrapped.arch == model.arch
        out = wrapped(photos32)
        assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=0.02, rtol=0.05), precision


@pytest.mark.parametrize("side", [1, 2, 5])
def test_every_corruption_handles_tiny_images(side):
    """Degenerate sizes (the originals' control points, shuffles and fractals need a few pixels) still work."""
    x = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(side))
    for name in C.ALL_CORRUPTIONS:
        out = C.corrupt(x, name, 3, generator=torch.Generator().manual_seed(0))
        assert out.shape == x.shape and torch.isfinite(out).all() and 0 <= out.min() <= out.max() <= 1, name
