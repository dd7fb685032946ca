"""Fixtures of the bench tests: tiny trained checkpoints, test-only noises, headless Chromium."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import torch

from robustvision.models import create_model
from robustvision.models.checkpoints import save_checkpoint
from robustvision.noises.base import NOISES, Noise, NoiseKind

MIXER_KW = {"num_blocks": 1, "embed_dim": 32}


def _tiny_checkpoints(root: Path, train_lenet) -> Path:
    """Three checkpoints (LeNet-5 standard and label-smoothing, a random-init 1-block Mixer), made once under
    ``root`` and reused."""
    root.mkdir(parents=True, exist_ok=True)
    done = root / ".done"
    if not done.exists():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny nets: one thread is faster than two contending ones
        save_checkpoint(train_lenet("standard", 0), root / "lenet5_standard.safetensors", {"technique": "standard"})
        save_checkpoint(
            train_lenet("label_smoothing", 1),
            root / "lenet5_ls.safetensors",
            {"technique": "label_smoothing"},
        )
        torch.manual_seed(2)
        mixer = create_model("mixer_tiny", num_classes=10, image_size=32, **MIXER_KW).eval()
        save_checkpoint(mixer, root / "mixer.safetensors", {"technique": "standard", "model_kwargs": MIXER_KW})
        torch.set_num_threads(threads)
        done.touch()
    return root


# ----------------------------------------------------------------------------------------------- test noises
class Darken(Noise):
    """Natural test noise: multiply by ``1 - 0.15 * severity`` plus seeded Gaussian noise (so seeds matter)."""

    name = "test_darken"
    kind = NoiseKind.NATURAL

    def __init__(self, severity: int = 1) -> None:
        if not 1 <= int(severity) <= 5:
            raise ValueError(f"severity must be an integer from 1 to 5, got {severity}")
        super().__init__(int(severity))

    def sample_params(self, shape, generator=None):
        return {"noise": torch.randn(shape, generator=generator) * 0.05 * self.severity}

    def apply(self, images, params, labels=None, model=None):
        return (images * (1 - 0.15 * self.severity) + params["noise"].to(images.device)).clamp(0, 1)


class Posterize(Noise):
    """System test noise: quantise to ``bits`` bits."""

    kind = NoiseKind.SYSTEM

    def __init__(self, severity: int = 1, *, bits: int = 3) -> None:
        if severity != 1:
            raise ValueError(f"system noise has a single setting: severity must be 1, got {severity}")
        super().__init__(1)
        self.bits = bits
        self.name = f"test_posterize{bits}"

    def apply(self, images, params, labels=None, model=None):
        levels = 2**self.bits - 1
        return torch.round(images * levels) / levels


class AlwaysZero(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return torch.zeros_like(out).index_fill_(1, torch.tensor([0]), 1.0)


class ModelSwap(Noise):
    """A ``wraps_model`` system noise: evaluates a model that always answers class 0; never touches images."""

    name = "test_modelswap"
    kind = NoiseKind.SYSTEM
    wraps_model = True

    def __init__(self, severity: int = 1) -> None:
        super().__init__(1)

    def wrap(self, model):
        return AlwaysZero(model)

    def apply(self, images, params, labels=None, model=None):
        raise AssertionError("a wraps_model noise must not be applied to images by the runner")


TEST_NOISES = {
    "test_darken": (Darken, {"kind": NoiseKind.NATURAL}),
    "test_posterize3": (lambda severity=1: Posterize(severity, bits=3), {"kind": NoiseKind.SYSTEM}),
    "test_posterize5": (lambda severity=1: Posterize(severity, bits=5), {"kind": NoiseKind.SYSTEM}),
    "test_modelswap": (ModelSwap, {"kind": NoiseKind.SYSTEM}),
}


@contextlib.contextmanager
def registered_test_noises():
    """Register the test noises for the duration of a block (removed afterwards)."""
    added = []
    try:
        for name, (builder, meta) in TEST_NOISES.items():
            if name not in NOISES._builders:
                NOISES.add(name, builder, **meta)
                added.append(name)
        yield
    finally:
        for name in added:
            NOISES._builders.pop(name, None)
            NOISES._meta.pop(name, None)


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def tiny_checkpoints(digits_lenet):
    """A factory: ``tiny_checkpoints(root)`` writes the three tiny checkpoints under ``root`` (once) and returns it."""
    return lambda root: _tiny_checkpoints(root, digits_lenet)


@pytest.fixture(scope="session")
def bench_checkpoints(tiny_checkpoints, tmp_path_factory) -> Path:
    """The three tiny checkpoints, made once per test session."""
    return tiny_checkpoints(tmp_path_factory.getbasetemp() / "bench_ckpts")


@pytest.fixture
def test_noises():
    """The test noises (``test_darken``, ``test_posterize3``, ...) registered for one test."""
    with registered_test_noises():
        yield


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="session")
def chromium():
    """``chromium(*args)`` runs headless Chromium with ``args`` (3 min at most), asserts it exits 0 without a console
    message and returns the finished process; skips the test when no Chromium is found."""
    import subprocess

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            break
    else:
        pytest.skip("no Chromium found (Debian: apt-get install chromium)")

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([path, *CHROME_FLAGS, *args], capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
        assert not console, f"console messages: {console}"
        return done

    return run
