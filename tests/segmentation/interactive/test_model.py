"""EdgeFlow network, losses, checkpoints, the network predictor and training (fast, CPU, tiny widths)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robustvision.segmentation.interactive import Click, InferenceConfig, NetPredictor, create_predictor
from robustvision.segmentation.interactive.losses import boundary_loss, nfl_beta, normalized_focal_loss
from robustvision.segmentation.interactive.model import (
    EdgeFlowConfig,
    EdgeFlowNet,
    FlowAlign,
    flow_warp,
    load_edgeflow,
    save_edgeflow,
)
from robustvision.segmentation.interactive.train import EdgeFlowTrainConfig, boundary_band, train_edgeflow

TINY = dict(width=4, num_branches=3, stem_channels=8, head_channels=8, fine_channels=4)


def test_zero_flow_warp_is_identity():
    x = torch.randn(2, 5, 7, 9)
    assert torch.allclose(flow_warp(x, torch.zeros(2, 2, 7, 9)), x, atol=1e-5)
    # A one-pixel flow along x shifts the content left by one column (interior columns).
    shifted = flow_warp(x, torch.cat([torch.ones(2, 1, 7, 9), torch.zeros(2, 1, 7, 9)], 1))
    assert torch.allclose(shifted[..., :-1], x[..., 1:], atol=1e-5)
    fam = FlowAlign(5, 3)  # zero-initialised flow: an untrained module is the identity warp
    assert torch.allclose(fam(x, torch.randn(2, 3, 4, 5)), x, atol=1e-5)


@pytest.mark.parametrize("edge_flow", [True, False])
def test_forward_shapes_and_gradients(edge_flow):
    net = EdgeFlowNet(EdgeFlowConfig(edge_flow=edge_flow, **TINY))
    out = net(torch.rand(2, 3, 48, 64), torch.zeros(2, 3, 48, 64))
    expected = {"instances", "coarse", "aux"} | ({"edges"} if edge_flow else set())
    assert set(out) == expected
    for v in out.values():
        assert v.shape == (2, 1, 48, 64) and torch.isfinite(v).all()
    out["instances"].mean().backward()
    assert net.maps_transform[0].weight.grad is not None  # the clicks reach the output
    with pytest.raises(ValueError, match="coord_features"):
        net(torch.rand(1, 3, 48, 64), torch.zeros(1, 3, 32, 64))


def test_clicks_change_the_output():
    torch.manual_seed(0)
    net = EdgeFlowNet(EdgeFlowConfig(**TINY)).eval()
    img = torch.rand(1, 3, 32, 32)
    coord = torch.zeros(1, 3, 32, 32)
    coord2 = coord.clone()
    coord2[:, 1, 10:15, 10:15] = 1
    with torch.no_grad():
        a, b = net(img, coord)["instances"], net(img, coord2)["instances"]
    assert not torch.allclose(a, b)


def test_nfl_normalisation_and_losses():
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    beta = nfl_beta(logits, target)
    assert torch.allclose(beta.sum(dim=(1, 2, 3)), torch.full((2,), 64.0), rtol=1e-4)
    good = normalized_focal_loss(target * 20 - 10, target)
    bad = normalized_focal_loss(10 - target * 20, target)
    assert float(good) < 1e-3 < float(bad)
    valid = torch.zeros_like(target)
    valid[..., :4] = 1
    masked = normalized_focal_loss(logits, target, valid)
    assert torch.isfinite(masked)
    m = torch.zeros(1, 1, 16, 16)
    m[..., 4:12, 4:12] = 1
    band = boundary_band(m)
    assert band[0, 0, 8, 8] == 0 and band[0, 0, 4, 8] == 1 and band[0, 0, 3, 8] == 1 and band[0, 0, 0, 0] == 0
    assert float(boundary_loss(band * 20 - 10, band)) < 1e-3


def test_checkpoint_round_trip(tmp_path):
    net = EdgeFlowNet(EdgeFlowConfig(**TINY)).eval()
    path = save_edgeflow(net, tmp_path / "m.safetensors", {"seed": 3, "inference": {"target_size": 64}})
    loaded, card = load_edgeflow(path)
    assert card["seed"] == 3 and card["model"]["width"] == 4
    x, c = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x, c)["instances"], loaded(x, c)["instances"])
    p = create_predictor("edgeflow", checkpoint=path)
    assert isinstance(p, NetPredictor) and p.config.target_size == 64
    with pytest.raises(TypeError, match="unknown inference"):
        create_predictor("edgeflow", checkpoint=path, bogus=1)
    # Errors: missing file, missing card, mismatching architecture, bad setting.
    with pytest.raises(FileNotFoundError):
        load_edgeflow(tmp_path / "nope.safetensors")
    card_path = path.with_suffix(".json")
    data = json.loads(card_path.read_text())
    data["model"]["width"] = 6
    card_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="does not match"):
        load_edgeflow(path)
    card_path.unlink()
    with pytest.raises(FileNotFoundError, match="model card"):
        load_edgeflow(path)
    with pytest.raises(ValueError, match="safetensors"):
        save_edgeflow(net, tmp_path / "m.pt", {})


def test_net_predictor_zoom_history_and_errors():
    torch.manual_seed(0)
    net = EdgeFlowNet(EdgeFlowConfig(**TINY)).eval()
    with torch.no_grad():
        net.cls_head.bias.fill_(5.0)  # an untrained net made to say "object" so zoom-in triggers
    p = NetPredictor(net, config=InferenceConfig(target_size=64, max_side=96, min_crop=20))
    img = (np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8)
    p.set_image(img)
    c1, c2, c3 = Click(30, 45, True), Click(10, 10, False), Click(40, 60, True)
    a = p.predict([c1])
    assert a.shape == (60, 90) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    p.predict([c1, c2])
    assert len(p.history) == 2 and p.history.current.roi is not None  # zoomed in after the first click
    p.predict([c1, c2, c3])
    assert len(p.history) == 3
    again = p.predict([c1])  # undo to one click: the history is cut back, and the result is reproduced
    assert len(p.history) == 1 and np.allclose(again, a, atol=1e-6)
    assert p.cache_stats["hits"] >= 1  # the whole-image view was encoded once in set_image and reused
    with pytest.raises(ValueError, match="outside"):
        p.predict([Click(60, 0, True)])
    with pytest.raises(ValueError, match="prev_mask"):
        p.predict([c1], prev_mask=np.zeros((5, 5)))
    out = p.predict([c1], prev_mask=np.zeros((60, 90)))
    assert out.shape == (60, 90)


def test_float_image_input_matches_uint8():
    net = EdgeFlowNet(EdgeFlowConfig(**TINY)).eval()
    p = NetPredictor(net, config=InferenceConfig(zoom_in=False, max_side=64))
    img = (np.random.default_rng(1).random((40, 40, 3)) * 255).astype(np.uint8)
    p.set_image(img)
    a = p.predict([Click(20, 20, True)])
    p.set_image(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    b = p.predict([Click(20, 20, True)])
    assert np.allclose(a, b, atol=1e-5)


def test_training_runs_and_learns_something(tmp_path):
    cfg = EdgeFlowTrainConfig(steps=3, batch_size=2, crop=48, samples=16, warmup=1, model=EdgeFlowConfig(**TINY))
    card = train_edgeflow(cfg, tmp_path / "t.safetensors", log_every=1)
    assert card["steps_done"] == 3 and card["recipe"]["seed"] == 0 and len(card["history"]) == 3
    assert all(np.isfinite(r["loss"]) for r in card["history"])
    net, _ = load_edgeflow(tmp_path / "t.safetensors")
    assert net.uses_edge


def test_interrupted_training_resumes_bit_identically(tmp_path):
    from safetensors.torch import load_file

    from robustvision.segmentation.interactive.train import state_path

    def cfg(**kw):
        base = dict(steps=4, batch_size=2, crop=48, samples=6, warmup=1, checkpoint_every=1, max_next_clicks=1)
        return EdgeFlowTrainConfig(model=EdgeFlowConfig(**TINY), **{**base, **kw})

    straight = train_edgeflow(cfg(), tmp_path / "a.safetensors", log_every=1)

    def interrupt(step, row):
        if step == 2:
            raise KeyboardInterrupt

    out = tmp_path / "b.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_edgeflow(cfg(), out, log_every=1, log=interrupt)
    assert state_path(out).is_file() and not out.exists()
    with pytest.raises(ValueError, match="another recipe .*lr"):
        train_edgeflow(cfg(lr=0.5), out, resume=True)
    resumed = train_edgeflow(cfg(checkpoint_every=3), out, log_every=1, resume=True)
    assert not state_path(out).exists()  # done: the state is cleaned up
    assert resumed["steps_done"] == 4 and [r["step"] for r in resumed["history"]] == [1, 2, 3, 4]
    wa, wb = load_file(str(tmp_path / "a.safetensors")), load_file(str(out))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert straight["history"][-1]["loss"] == resumed["history"][-1]["loss"]

    # a corrupt state is one clear error
    state_path(out).write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable training state"):
        train_edgeflow(cfg(), out, resume=True)


def test_overflow_start_is_an_over_segmentation_with_a_negative_click_in_it():
    import cv2

    from robustvision.segmentation.interactive.train import overflow_start

    gt = np.zeros((96, 96), bool)
    gt[30:70, 25:60] = True
    valid = np.ones_like(gt)
    rng = np.random.default_rng(3)
    for _ in range(10):
        prev, click = overflow_start(gt, valid, rng)
        extra = prev & ~gt
        assert (prev >= gt).all() and extra.any()  # the object plus some background
        n, _ = cv2.connectedComponents(prev.astype(np.uint8))
        assert n == 2  # one piece: the overflow touches the object
        assert click is not None and not click.is_positive and extra[click.y, click.x]
    assert overflow_start(np.ones((64, 64), bool), np.ones((64, 64), bool), rng) is None  # no room around it


def test_training_with_overflow_starts(tmp_path):
    cfg = EdgeFlowTrainConfig(
        steps=2, batch_size=2, crop=48, samples=4, warmup=1, overflow_prob=1.0, model=EdgeFlowConfig(**TINY)
    )
    card = train_edgeflow(cfg, tmp_path / "o.safetensors", log_every=1)
    assert card["steps_done"] == 2 and "--overflow-prob 1.0" in card["command"]
    assert all(np.isfinite(r["loss"]) for r in card["history"])


@pytest.mark.parametrize("single", [0.0, 1.0])
def test_first_click_samples_train_on_the_first_click_alone(tmp_path, monkeypatch, single):
    from robustvision.segmentation.interactive import train as train_mod

    seen = []  # (click counts, previous-map mass) of every pass, simulated and trained

    def recording_coord(aux, clicks, size):
        seen.append(([len(c) for c in clicks], float(aux.abs().sum())))
        return real_coord(aux, clicks, size)

    real_coord = train_mod._coord
    monkeypatch.setattr(train_mod, "_coord", recording_coord)
    cfg = EdgeFlowTrainConfig(
        steps=3, batch_size=2, crop=48, samples=6, warmup=1, overflow_prob=1.0, extra_clicks=8,
        max_next_clicks=3, single_click_prob=single, model=EdgeFlowConfig(**TINY),
    )  # fmt: skip
    card = train_edgeflow(cfg, tmp_path / "s.safetensors", log_every=1)
    counts = [n for c, _ in seen for n in c]
    if single:
        assert set(counts) == {1} and all(mass == 0 for _, mass in seen)
        assert "--single-click-prob 1.0" in card["command"]
    else:  # the overflow starts bring a negative click and a previous map: the test can tell the two apart
        assert max(counts) > 1 and any(mass > 0 for _, mass in seen)
        assert "--single-click-prob" not in card["command"]


def test_extra_clicks_widen_the_initial_click_counts(tmp_path):
    from robustvision.segmentation.interactive.train import initial_clicks

    gt = np.zeros((96, 96), bool)
    gt[20:76, 20:76] = True
    valid = np.ones_like(gt)

    def counts(extra):
        rng = np.random.default_rng(0)
        out = [initial_clicks(gt, valid, rng, extra) for _ in range(400)]
        assert all(c[0].is_positive and gt[c[0].y, c[0].x] for c in out)  # the first click: inside the object
        pos = [sum(k.is_positive for k in c[1:]) for c in out]
        neg = [sum(not k.is_positive for k in c[1:]) for c in out]
        for c in out:  # extra positives inside the object, negatives outside it
            assert all(gt[k.y, k.x] == k.is_positive for k in c)
        return pos, neg

    pos3, neg3 = counts(3)
    assert max(pos3) == 3 and max(neg3) == 3  # the default table: 0-3 of each
    pos12, neg12 = counts(12)
    assert 3 < max(pos12) <= 12 and 3 < max(neg12) <= 12
    assert np.mean(pos12) > np.mean(pos3) and np.mean(neg12) > np.mean(neg3)
    cfg = EdgeFlowTrainConfig(
        steps=1, batch_size=2, crop=48, samples=4, warmup=1, extra_clicks=8, model=EdgeFlowConfig(**TINY)
    )
    assert "--extra-clicks 8" in train_edgeflow(cfg, tmp_path / "x.safetensors")["command"]


def test_worker_processes_and_click_threads_do_not_change_the_result(tmp_path):
    from safetensors.torch import load_file

    base = dict(steps=3, batch_size=3, crop=48, samples=9, warmup=1, max_next_clicks=2, seed=4)
    serial = train_edgeflow(EdgeFlowTrainConfig(model=EdgeFlowConfig(**TINY), **base), tmp_path / "a.safetensors")
    parallel = train_edgeflow(
        EdgeFlowTrainConfig(model=EdgeFlowConfig(**TINY), workers=2, **base), tmp_path / "b.safetensors"
    )
    wa, wb = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert serial["final_running"] == parallel["final_running"] and parallel["recipe"]["workers"] == 2


def test_init_from_checkpoint_and_architecture_mismatch(tmp_path):
    base = dict(steps=1, batch_size=2, crop=48, samples=4, warmup=1)
    first = tmp_path / "first.safetensors"
    train_edgeflow(EdgeFlowTrainConfig(model=EdgeFlowConfig(**TINY), **base), first)
    card = train_edgeflow(
        EdgeFlowTrainConfig(model=EdgeFlowConfig(**TINY), init=str(first), **base), tmp_path / "second.safetensors"
    )
    assert card["recipe"]["init"] == str(first) and "--init" in card["command"]
    other = EdgeFlowConfig(**{**TINY, "edge_flow": not EdgeFlowConfig(**TINY).edge_flow})
    with pytest.raises(ValueError, match="another architecture"):
        train_edgeflow(EdgeFlowTrainConfig(model=other, init=str(first), **base), tmp_path / "third.safetensors")


def test_training_gives_back_the_callers_random_state_and_trains_as_global_seeding(tmp_path):
    import random

    from safetensors.torch import load_file

    from robustvision.runtime import resolve_device, seed_everything
    from robustvision.segmentation.interactive.train import _train_edgeflow

    cfg = EdgeFlowTrainConfig(
        steps=2, batch_size=2, crop=48, samples=4, warmup=1, seed=4, max_next_clicks=2, model=EdgeFlowConfig(**TINY)
    )
    torch.manual_seed(11)
    np.random.seed(11)
    random.seed(11)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    train_edgeflow(cfg, tmp_path / "scoped.safetensors")
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]
    # the code path before scoping: the process's generators seeded for good, then the same training body
    seed_everything(cfg.seed)
    _train_edgeflow(cfg, tmp_path / "global.safetensors", resolve_device("cpu"), None, 25, False)
    new, old = load_file(str(tmp_path / "scoped.safetensors")), load_file(str(tmp_path / "global.safetensors"))
    assert sorted(new) == sorted(old) and all(torch.equal(new[k], old[k]) for k in new)
