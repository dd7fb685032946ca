"""Multi-perturbation training: every method runs, a tiny run lowers the loss, checkpoints round-trip, bad input."""

from __future__ import annotations

import pytest
import torch

from robustvision.defenses.gbn import gbn_layers
from robustvision.defenses.multi_perturbation import AttackSettings, create_method, list_methods
from robustvision.defenses.train import (
    DefenseConfig,
    build_model,
    load_defense,
    save_defense,
    split_dataset,
    train_defense,
)
from robustvision.registry import UnknownNameError

SMALL_EPS = {"l1": 2.0, "l2": 0.5, "linf": 0.05}


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(method: str, **kw) -> DefenseConfig:
    base = dict(
        method=method,
        budgets=SMALL_EPS,
        epochs=1,
        batch_size=32,
        lr=0.05,
        eps_ramp_epochs=0,
        attack=AttackSettings(steps=2),
        seed=0,
    )
    base.update(kw)
    return DefenseConfig(**base)


def test_methods_registry_lists_every_method():
    assert set(list_methods()) == {"standard", "pgd_linf", "pgd_l2", "pgd_l1", "avg", "max", "msd", "eat", "gbn"}


@pytest.mark.parametrize("method", ["standard", "pgd_linf", "pgd_l2", "pgd_l1", "avg", "max", "msd", "gbn"])
def test_every_method_trains_a_step(toy_bars, method):
    data = toy_bars(64)
    cfg = _config(method, max_steps_per_epoch=1)
    model = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    history = train_defense(model, data, cfg)
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0].loss))
    assert (history[0].gate_loss is not None) == (method == "gbn")
    assert bool(gbn_layers(model)) == (method == "gbn")
    assert not model.training


def test_tiny_gbn_run_lowers_the_classification_and_gate_losses(toy_bars):
    data = toy_bars(96)
    cfg = _config("gbn", epochs=4, lr=0.1)
    model = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    history = train_defense(model, data, cfg, val_set=data)
    assert history[-1].loss < 0.7 * history[0].loss
    assert history[-1].gate_loss < history[0].gate_loss
    assert history[-1].val_clean_acc > 0.5


def test_gbn_gate_parameters_learn_only_from_the_domain_loss(toy_bars):
    data = toy_bars(32)
    cfg = _config("gbn", max_steps_per_epoch=1, gate_lr=0.0)
    model = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    gate_before = [p.clone() for _, layer in gbn_layers(model) for p in layer.gate.parameters()]
    train_defense(model, data, cfg)
    gate_after = [p for _, layer in gbn_layers(model) for p in layer.gate.parameters()]
    # With the gate optimiser's lr at 0 the gates do not move: the classification optimiser never steps them.
    assert all(torch.equal(a, b) for a, b in zip(gate_before, gate_after, strict=True))


def test_checkpoint_round_trip_and_domain_mismatch(toy_bars, tmp_path):
    data = toy_bars(32)
    cfg = _config("gbn", max_steps_per_epoch=1)
    model = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    history = train_defense(model, data, cfg)
    path = save_defense(model, tmp_path / "gbn.safetensors", cfg, history, {"dataset": "toy"})
    loaded, card = load_defense(path)
    x = data.tensors()[0][:5]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert card["gbn"]["domains"] == ["clean", "l1", "l2", "linf"]
    load_defense(path, domains=("clean", "l1", "l2", "linf"))
    with pytest.raises(ValueError, match=r"domain list \('l1', 'l2', 'linf'\) does not match"):
        load_defense(path, domains=("l1", "l2", "linf"))


def test_defense_checkpoints_use_the_package_format(tmp_path):
    import json

    from robustvision.models.checkpoints import CLASSIFIER_FORMAT, load_checkpoint, save_weights

    cfg = _config("standard", max_steps_per_epoch=1)
    model = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    path = save_defense(model, tmp_path / "std.safetensors", cfg)
    assert json.loads(path.with_suffix(".json").read_text())["format"] == CLASSIFIER_FORMAT
    assert load_checkpoint(path)[1]["technique"] == "standard"
    save_weights(model, tmp_path / "t.safetensors", {"arch": "lenet5"}, fmt="robustvision.das.target/1")
    with pytest.raises(ValueError, match="not 'robustvision.classifier/1'"):
        load_defense(tmp_path / "t.safetensors")


def test_domains_given_for_a_plain_checkpoint_are_rejected(tmp_path):
    cfg = _config("standard", max_steps_per_epoch=1)
    model = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    path = save_defense(model, tmp_path / "std.safetensors", cfg)
    with pytest.raises(ValueError, match="has no GBN layers"):
        load_defense(path, domains=("clean", "l1"))


def test_bad_configs_are_one_clear_error_each():
    with pytest.raises(ValueError, match="unknown norm 'l3'"):
        DefenseConfig(norms=("l1", "l3"))
    with pytest.raises(UnknownNameError, match="did you mean 'gbn'"):
        DefenseConfig(method="gbm")
    with pytest.raises(UnknownNameError):
        create_method("trades_gbn")
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        DefenseConfig(epochs=0)
    with pytest.raises(ValueError, match="does not exist"):
        build_model(_config("gbn", gbn_layers=["net.bn9"]), num_classes=4, in_chans=1, image_size=28)


def test_method_and_model_must_agree(toy_bars):
    data = toy_bars(32)
    gbn_model = build_model(_config("gbn"), num_classes=4, in_chans=1, image_size=28)
    with pytest.raises(ValueError, match="cannot train a GBN model"):
        train_defense(gbn_model, data, _config("avg", max_steps_per_epoch=1))
    plain = build_model(_config("avg"), num_classes=4, in_chans=1, image_size=28)
    with pytest.raises(ValueError, match="needs a model converted"):
        train_defense(plain, data, _config("gbn", max_steps_per_epoch=1))


def test_gbn_without_clean_branch_has_three_domains(toy_bars):
    cfg = _config("gbn", clean_branch=False, max_steps_per_epoch=1)
    model = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    assert gbn_layers(model)[0][1].domains == ("l1", "l2", "linf")
    train_defense(model, toy_bars(32), cfg)


@pytest.mark.shared_data
def test_mnist_split_is_8000_2000_and_seeded(shared_data):
    tr, te, info = split_dataset("mnist", shared_data / "mnist", seed=0)
    assert (len(tr), len(te)) == (8000, 2000)
    assert info == {"dataset": "mnist", "source_split": "test", "seed": 0, "n_train": 8000, "n_test": 2000}
    tr2, te2, _ = split_dataset("mnist", shared_data / "mnist", seed=0)
    assert torch.equal(te.tensors()[1], te2.tensors()[1])
    _, te3, _ = split_dataset("mnist", shared_data / "mnist", seed=1)
    assert not torch.equal(te.tensors()[1], te3.tensors()[1])
