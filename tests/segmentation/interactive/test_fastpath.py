"""The inference fast path gives the plain network's probabilities (batch norms folded, windowed click disks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustvision.segmentation.interactive import Click, create_predictor, disk_maps
from robustvision.segmentation.interactive.fastpath import optimize_for_inference
from robustvision.segmentation.interactive.model import EdgeFlowConfig, EdgeFlowLiteNet, EdgeFlowNet
from robustvision.segmentation.interactive.predictor import InferenceConfig, NetPredictor


def _scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (240, 320, 3), dtype=np.uint8)
    img[60:180, 90:230] = (220, 190, 50)
    img[100:140, 150:260] = (30, 160, 220)
    return img


# positive/negative clicks that move the zoom-in crop (after the first click the network sees a crop)
CLICKS = [Click(120, 160, True), Click(120, 250, False), Click(70, 100, True), Click(175, 225, True),
          Click(20, 20, False), Click(110, 95, True)]  # fmt: skip


def _randomise_norms(net: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial batch-norm statistics, so that folding them has something to get wrong."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return net.eval()


def _assert_same_probs(fast: NetPredictor, plain: NetPredictor, tol: float = 1e-4, zoomed: bool = True) -> None:
    img = _scene()
    fast.set_image(img)
    plain.set_image(img)
    for k in range(1, len(CLICKS) + 1):
        a, b = fast.predict(CLICKS[:k]), plain.predict(CLICKS[:k])
        assert a.shape == b.shape == img.shape[:2]
        diff = float(np.abs(a - b).max())
        assert diff < tol, f"click {k}: the fast path differs by {diff:.2e}"
    if zoomed:  # the crops moved: the comparison covered zoomed-in steps, not only the whole image
        assert fast.cache_stats["misses"] >= 2


@pytest.mark.parametrize("name", ["edgeflow", "edgeflow_noedge"])
def test_shipped_fast_path_matches_plain(name):
    torch.manual_seed(0)
    fast, plain = create_predictor(name), create_predictor(name, optimize=False)
    assert fast.config.optimize and not plain.config.optimize
    assert getattr(fast.net, "folded_norms", 0) > 50 and not hasattr(plain.net, "folded_norms")
    _assert_same_probs(fast, plain)


@pytest.mark.parametrize("edge_flow", [True, False])
def test_hrnet_fast_path_matches_plain(edge_flow):
    torch.manual_seed(0)
    net = _randomise_norms(EdgeFlowNet(EdgeFlowConfig(width=8, edge_flow=edge_flow)))
    cfg = {"target_size": 160, "max_side": 160}
    fast = NetPredictor(net, config=InferenceConfig(**cfg))
    plain = NetPredictor(net, config=InferenceConfig(**cfg, optimize=False))
    _assert_same_probs(fast, plain, zoomed=False)  # an untrained net's mask may be empty: no zoom-in then


def test_optimize_leaves_the_network_alone_and_folds_every_norm():
    torch.manual_seed(0)
    net = _randomise_norms(EdgeFlowLiteNet(EdgeFlowConfig(backbone="efficientnet_lite0")))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = optimize_for_inference(net)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) > 60
    # only FineNet's norm before its zero-padded 3x3 output conv stays (folding it would change the border)
    left = [n for n, m in fast.modules.__self__.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert left == ["finenet.bottleneck.2"]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    x, c = torch.rand(1, 3, 96, 128), torch.zeros(1, 3, 96, 128)
    c[:, 1, 40:50, 60:70] = 1
    with torch.inference_mode():
        a, b = net(x, c), fast(x, c)
    assert "aux" in a and "aux" not in b  # the training-only output is not upsampled
    for key in ("instances", "edges", "coarse"):
        assert float((a[key] - b[key]).abs().max()) < 1e-3, key


def _dense_disk_maps(points: torch.Tensor, height: int, width: int, radius: float) -> torch.Tensor:
    """The whole-map reference: an N x H x W distance tensor (what the windowed version replaced)."""
    b = points.shape[0]
    ys = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width)
    out = torch.zeros(b, 2, height, width)
    py, px = points[..., 0].view(b, -1, 1, 1), points[..., 1].view(b, -1, 1, 1)
    inside = (ys - py) ** 2 + (xs - px) ** 2 <= radius * radius
    label = points[..., 2].view(b, -1, 1, 1)
    out[:, 0] = (inside & (label == 1)).any(dim=1).float()
    out[:, 1] = (inside & (label == 0)).any(dim=1).float()
    return out


@pytest.mark.parametrize("radius", [5, 3.5, 1])
def test_windowed_disk_maps_equal_the_dense_encoding(radius):
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([torch.rand(3, 12, 2, generator=g) * torch.tensor([50.0, 70.0]) - 3.0,
                     torch.randint(-1, 2, (3, 12, 1), generator=g).float()], dim=-1)  # fmt: skip
    pts[0, 0] = torch.tensor([0.0, 0.0, 1.0])  # corners and edges
    pts[0, 1] = torch.tensor([44.0, 63.0, 0.0])
    pts[1, 2] = torch.tensor([22.5, 63.9, 1.0])
    got, want = disk_maps(pts, 45, 64, radius), _dense_disk_maps(pts, 45, 64, radius)
    assert torch.equal(got, want)
    assert got.sum() > 0
