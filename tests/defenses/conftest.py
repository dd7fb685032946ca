"""Fixtures of the defence tests: the toy GBN LeNet-5 and a tiny four-class training set."""

from __future__ import annotations

import pytest
import torch


def _gbn_lenet(seed: int = 0, *, state: dict | None = None, gate_once: bool = False, padding: int | None = None):
    """A zoo LeNet-5 (1 x 28 x 28, 10 classes) converted to GBN with the reference layout (conv gate at
    ``net.bn1``, FC gate at ``net.bn2``), in eval mode.

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


@pytest.fixture(scope="session")
def gbn_lenet():
    """A factory for the toy GBN model: ``gbn_lenet(seed=0, *, state=None, gate_once=False, padding=None)``."""
    return _gbn_lenet


def _toy_bars(n: int = 96, seed: int = 0):
    """Four classes, each a bright bar in its own place on a dim noisy 28 x 28 background."""
    from robustvision.data.base import TensorClassificationDataset

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    for c in range(4):
        x[y == c, :, 4 + 5 * c : 8 + 5 * c, 6:22] = 0.9
    return TensorClassificationDataset("toy", "train", x, y, ["a", "b", "c", "d"])


@pytest.fixture(scope="session")
def toy_bars():
    """A factory for a tiny training set: ``toy_bars(n=96, seed=0)``."""
    return _toy_bars
