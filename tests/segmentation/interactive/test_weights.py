"""The shipped default checkpoints: present, small, documented, loadable by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robustvision.segmentation.interactive import Click, create_predictor
from robustvision.segmentation.interactive.predictor import WEIGHTS_DIR


@pytest.mark.parametrize("name", ["edgeflow", "edgeflow_noedge"])
def test_shipped_checkpoint(name):
    path = WEIGHTS_DIR / f"{name}.safetensors"
    assert path.is_file(), f"{path} is not shipped"
    assert path.stat().st_size < 20 * 2**20
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["model"]["edge_flow"] == (name == "edgeflow")
    assert card["command"].startswith("robustvision iseg train") and "seed" in card and card["steps_done"] > 0
    # ImageNet-pretrained EfficientNet-Lite0, trained on real masks whose sources are named with their commits
    assert card["model"]["backbone"] == "efficientnet_lite0"
    assert card["recipe"]["train_set"] == "duts:0.6,coco:0.4"
    assert all(len(src["commit"]) == 40 for src in card["train_data_sources"])
    assert card["inference"]["max_side"] == 256 and card["inference"]["target_size"] == 320  # chosen on DUTS-val
    p = create_predictor(name)
    img = np.full((120, 180, 3), 40, np.uint8)
    img[30:90, 50:130] = (230, 200, 40)
    p.set_image(img)
    probs = p.predict([Click(60, 90, True)])
    assert probs.shape == (120, 180) and np.isfinite(probs).all()
    # The clicked pixel's neighbourhood is more likely object than the far corner.
    assert probs[55:66, 85:96].mean() > probs[:10, :10].mean()
