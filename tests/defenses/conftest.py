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
