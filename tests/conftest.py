"""Shared fixtures. Tests never touch the network; tests that read ../shared/data skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robustvision.runtime import shared_data_dir

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own ROBUSTVISION_HOME unless one is shared deliberately via a fixture, and its own
    default results store (``ROBUSTVISION_STORE``), so a command run without ``--store`` never writes to the
    checkout's or the user's ``runs/robustvision.db``."""
    if "ROBUSTVISION_TEST_HOME" in os.environ:
        monkeypatch.setenv("ROBUSTVISION_HOME", os.environ["ROBUSTVISION_TEST_HOME"])
    else:
        monkeypatch.setenv("ROBUSTVISION_HOME", str(tmp_path_factory.getbasetemp() / "rv_home"))
    monkeypatch.setenv("ROBUSTVISION_STORE", str(tmp_path_factory.mktemp("store") / "results.db"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder; skips the test with a clear reason when it is absent."""
    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data is absent (a fresh clone has none); set ROBUSTVISION_SHARED_DATA to run this")
    return root


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests keep artefacts worth looking at (screenshots, reports): test-artifacts/ in the checkout."""
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Small nets run fastest on one thread when the CPU is shared (two threads thrash under load)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_gbn_lenet(seed: int = 0, *, state: dict | None = None, gate_once: bool = False, padding: int | None = None):
    """The toy GBN model of the defence tests: a zoo LeNet-5 (1 x 28 x 28, 10 classes) converted to GBN with the
    reference layout (conv gate at ``net.bn1``, FC gate at ``net.bn2``), in eval mode.

    Args:
        seed: seeds the initialisation.
        state: the plain LeNet-5 weights to start from (every branch copies its BN).
        gate_once: tie ``net.bn2`` to ``net.bn1``'s gate.
        padding: conv1 padding (None: the zoo's 2; 0: the reference LeNet-5).
    """
    from robustvision.defenses.gbn import REFERENCE_GBN_LAYOUT, convert_to_gbn, tie_gates
    from robustvision.defenses.train import set_lenet_padding
    from robustvision.models import create_model

    torch.manual_seed(seed)
    model = create_model("lenet5", in_chans=1, image_size=28)
    if padding is not None:
        set_lenet_padding(model, padding)
    if state is not None:
        model.load_state_dict(state)
    convert_to_gbn(model, ["net.bn1", "net.bn2"], gates=REFERENCE_GBN_LAYOUT["lenet5"])
    if gate_once:
        tie_gates(model)
    return model.eval()


@pytest.fixture
def gbn_lenet():
    """A factory for the toy GBN model (see :func:`make_gbn_lenet`)."""
    return make_gbn_lenet


def make_toy_bars(n: int = 96, seed: int = 0):
    """A tiny training set: four classes, each a bright bar in its own place on a dim noisy 28 x 28 background."""
    from robustvision.data.base import TensorClassificationDataset

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    for c in range(4):
        x[y == c, :, 4 + 5 * c : 8 + 5 * c, 6:22] = 0.9
    return TensorClassificationDataset("toy", "train", x, y, ["a", "b", "c", "d"])
