"""Adaptation runs, checkpoints and the ``robustvision adapt`` CLI, on tiny generated data."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from robustvision.commands.adapt import app
from robustvision.segmentation.uda import AdaptConfig, adapt, generate_streets, load_adapted, save_adapted
from robustvision.segmentation.uda.evaluate import evaluate_segmenter

SIZE = (24, 48)


@pytest.fixture(scope="module")
def domains():
    return generate_streets("source", 16, SIZE, seed=0), generate_streets("target", 16, SIZE, seed=0)


def test_tiny_cfcontra_run_lowers_its_loss(domains):
    src, tgt = domains
    cfg = AdaptConfig(method="cfcontra", iters=40, batch_size=4, image_size=SIZE, init_batches=2, seed=0,
                      contrast_weight=0.01)  # fmt: skip
    result = adapt(cfg, src, tgt)
    totals = [h["total"] for h in result.history]
    assert sum(totals[-8:]) / 8 < 0.8 * sum(totals[:8]) / 8
    last = result.history[-1]
    assert {"ce", "ce_aux", "ent", "ent_aux", "con_s2s", "con_t2t", "con_t2s", "con_s2t"} <= set(last)
    assert 0.0 <= last["ent"] <= cfg.ent_main and 0 < last["pseudo_kept"] <= 1
    bank = result.source_bank
    assert bank.prototypes.shape == (19, result.model.feature_dim)
    assert torch.allclose(bank.prototypes[bank.present].norm(dim=1), torch.ones(int(bank.present.sum())), atol=1e-5)


def test_methods_use_their_terms(domains):
    src, tgt = domains
    only = adapt(AdaptConfig(method="source_only", iters=2, batch_size=2, image_size=SIZE), src, tgt)
    ent = adapt(AdaptConfig(method="minent", iters=3, warmup_iters=1, batch_size=2, image_size=SIZE), src, tgt)
    assert set(only.history[-1]) == {"ce", "ce_aux", "total"} and only.source_bank is None
    assert "ent" not in ent.history[0] and "ent" in ent.history[-1] and "con_t2s" not in ent.history[-1]


def test_same_seed_same_run(domains):
    src, tgt = domains
    cfg = AdaptConfig(method="cfcontra", iters=3, batch_size=2, image_size=SIZE, init_batches=1, seed=5)
    a, b = adapt(cfg, src, tgt), adapt(cfg, src, tgt)
    assert a.history == b.history


def test_bad_config_and_unlabelled_source(domains):
    src, tgt = domains
    with pytest.raises(KeyError, match="cfcontra"):
        adapt(AdaptConfig(method="cfcontr"), src, tgt)
    with pytest.raises(ValueError, match="warmup_iters"):
        AdaptConfig(iters=5, warmup_iters=9).validate()
    from robustvision.segmentation.uda.specs import open_domain

    unlabelled = open_domain("synthetic", "target", SIZE, n=4)
    with pytest.raises(ValueError, match="source domain must be labelled"):
        adapt(AdaptConfig(iters=1, batch_size=2, image_size=SIZE), unlabelled, tgt)


def test_checkpoint_round_trip(domains, tmp_path):
    src, tgt = domains
    result = adapt(AdaptConfig(method="cfcontra", iters=3, batch_size=2, image_size=SIZE, init_batches=1), src, tgt)
    weights, card = save_adapted(tmp_path / "m.safetensors", result, {"miou": 0.5})
    model, meta, sbank, tbank = load_adapted(weights)
    assert meta["config"]["method"] == "cfcontra" and meta["metrics"]["miou"] == 0.5
    x = torch.rand(2, 3, *SIZE)
    assert torch.equal(model.predict(x), result.model.predict(x))
    assert torch.equal(sbank.prototypes, result.source_bank.prototypes)
    assert torch.equal(tbank.present, result.target_bank.present)
    json.loads(card.read_text())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_adapted(tmp_path / "missing.safetensors")


def test_cli_train_bare_and_evaluate(tmp_path, monkeypatch):
    monkeypatch.setattr("robustvision.segmentation.uda.specs.SYNTHETIC_SIZES", {"source": 8, "target": 8, "eval": 4})
    runner = CliRunner()
    ckpt = tmp_path / "c.safetensors"
    args = ["--iters", "3", "--batch-size", "2", "--image-size", "24x48", "--out", str(ckpt)]
    res = runner.invoke(app, ["--method", "cfcontra", *args])  # bare `robustvision adapt --method ...`
    assert res.exit_code == 0, res.output
    assert "mIoU" in res.output and "memory bank: 2 x 19 x 64" in res.output and ckpt.exists()
    res = runner.invoke(app, ["train", "--method", "minent", *args])
    assert res.exit_code == 0, res.output
    out = tmp_path / "eval"
    res = runner.invoke(app, ["evaluate", str(ckpt), "--target", "synthetic", "--out", str(out), "--overlays", "2"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and "road" in metrics["iou"]
    assert (out / "confusion.png").stat().st_size > 1000 and len(list((out / "overlays").glob("*.png"))) == 2
    # Evaluation through the library gives the same number as the CLI.
    model, _, _, _ = load_adapted(ckpt)
    from robustvision.segmentation.uda.specs import open_domain

    m, _ = evaluate_segmenter(model, open_domain("synthetic", "eval", SIZE, n=4))
    assert m.miou == pytest.approx(metrics["miou"])


def test_cli_bad_input_is_one_clear_error(tmp_path):
    from robustvision.errors import UserError

    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["train", "--iters", "1", "--target", f"photos:{empty}"])
    assert isinstance(res.exception, UserError) and "no images found" in str(res.exception)
    res = runner.invoke(app, ["train", "--iters", "1", "--image-size", "64by128"])
    assert isinstance(res.exception, UserError) and "HEIGHTxWIDTH" in str(res.exception)
    res = runner.invoke(app, ["evaluate", str(tmp_path / "nope.safetensors")])
    assert isinstance(res.exception, UserError) and "no checkpoint" in str(res.exception)


def _global_rng_state():
    import random

    import numpy as np

    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_adapt_gives_back_the_callers_random_state_and_trains_as_global_seeding(domains):
    import random

    import numpy as np

    from robustvision.runtime import resolve_device, seed_everything
    from robustvision.segmentation.uda.train import METHODS, _adapt

    src, tgt = domains
    cfg = AdaptConfig(method="cfcontra", iters=3, warmup_iters=1, batch_size=2, image_size=SIZE, init_batches=1,
                      seed=3)  # fmt: skip
    torch.manual_seed(11)
    np.random.seed(11)
    random.seed(11)
    before = _global_rng_state()
    scoped = adapt(cfg, src, tgt)
    after = _global_rng_state()
    assert torch.equal(after[0], before[0]) and np.array_equal(after[1], before[1]) and after[2] == before[2]
    # the code path before scoping: the process's generators seeded for good, then the same training body
    seed_everything(cfg.seed)
    spec = METHODS.create(cfg.method)
    old = _adapt(cfg.validate(), spec, src, tgt, None, resolve_device(cfg.device), None)
    new_sd, old_sd = scoped.model.state_dict(), old.model.state_dict()
    assert list(new_sd) == list(old_sd) and all(torch.equal(new_sd[k], old_sd[k]) for k in new_sd)
    assert torch.equal(scoped.source_bank.prototypes, old.source_bank.prototypes)
    assert scoped.history == old.history
