"""Trainer, techniques and zoo presets: one step per technique, determinism, exact resume, checkpoints, cache."""

from __future__ import annotations

import math

import pytest
import torch

from robustvision.data import TensorClassificationDataset, create_dataset
from robustvision.models import create_model
from robustvision.models.checkpoints import load_checkpoint
from robustvision.registry import UnknownNameError
from robustvision.runtime import make_generator, seed_everything
from robustvision.training import TrainConfig, Trainer, create_technique, list_techniques, train_classifier
from robustvision.training.trainer import lr_factor
from robustvision.training.zoo_presets import (
    DEFAULT_PRESET,
    ZooMember,
    ZooPreset,
    ensure_zoo,
    member_config,
    member_key,
)

TINY_VIT = {"depth": 2, "embed_dim": 32, "num_heads": 2, "patch_size": 8}


def toy_set(n=16, size=16, seed=0, split="train"):
    g = make_generator(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    labels = torch.arange(n) % 4
    return TensorClassificationDataset("toy", split, images, labels, ["a", "b", "c", "d"])


@pytest.fixture(scope="module")
def digits_small():
    train = create_dataset("digits", split="train")
    test = create_dataset("digits", split="test")
    return train.subset(torch.arange(192)), test.subset(torch.arange(96))


def quiet(**kw):
    return TrainConfig(progress=False, device="cpu", **kw)


def test_technique_registry_covers_the_issue():
    expected = {"standard", "label_smoothing", "ema", "mixup", "cutmix", "augmix", "adamw", "drop_path"}
    assert expected | {"pgd_at", "trades"} <= set(list_techniques())
    with pytest.raises(UnknownNameError, match="trades"):
        create_technique("trade")
    # Each technique switches only the fields it names; standard switches none.
    base = TrainConfig()
    assert create_technique("standard").apply(base) == base
    for name in list_techniques():
        tech = create_technique(name)
        changed = {k for k, v in tech.apply(base).to_dict().items() if base.to_dict()[k] != v}
        assert changed == {k for k, v in tech.changes.items() if base.to_dict()[k] != v}


@pytest.mark.parametrize("name", list_techniques())
def test_every_technique_takes_one_finite_step(name):
    tech = create_technique(name)
    seed_everything(0)
    model = create_model("vit_tiny", num_classes=4, image_size=16, **TINY_VIT, **tech.model_kwargs)
    before = [p.detach().clone() for p in model.parameters()]
    config = quiet(epochs=1, batch_size=8, adv_steps=2, warmup_epochs=0, augmix_severity=2)
    metrics = train_classifier(model, toy_set(8), toy_set(8, seed=1, split="test"), config, name)
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["test_loss"])
    assert metrics["steps"] == 1 and metrics["technique"] == name
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), "one step changed nothing"


def test_drop_path_needs_a_model_built_for_it():
    model = create_model("vit_tiny", num_classes=4, image_size=16, **TINY_VIT)
    with pytest.raises(ValueError, match="drop_path_rate"):
        train_classifier(model, toy_set(), None, quiet(epochs=1), "drop_path")


def test_pgd_at_trains_on_examples_inside_the_budget(monkeypatch):
    from robustvision.training import techniques

    seen = []
    original = techniques.PGD.__call__

    def spy(self, images, labels=None, model=None, *, generator=None):
        adv = original(self, images, labels, model, generator=generator)
        seen.append((adv - images).abs().max().item())
        return adv

    monkeypatch.setattr(techniques.PGD, "__call__", spy)
    model = create_model("lenet5", num_classes=4, image_size=16)
    train_classifier(model, toy_set(), None, quiet(epochs=1, batch_size=8, adv_steps=2, adv_eps=0.1), "pgd_at")
    assert len(seen) == 2 and all(0.05 < d <= 0.1 + 1e-6 for d in seen)


def test_config_yaml_round_trip_and_errors(tmp_path):
    config = TrainConfig(optimizer="adamw", lr=3e-4, epochs=7)
    path = tmp_path / "c.yaml"
    config.to_yaml(path)
    assert TrainConfig.from_yaml(path) == config
    path.write_text("lrr: 0.1\n")
    with pytest.raises(ValueError, match="did you mean 'lr'"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="adv_eps"):
        TrainConfig(adv_eps=8)
    with pytest.raises(FileNotFoundError):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_warmup_then_cosine():
    c = TrainConfig(warmup_start=0.1, min_lr=0.0)
    assert lr_factor(0, 100, 10, c) == pytest.approx(0.1)
    assert lr_factor(5, 100, 10, c) == pytest.approx(0.55)
    assert lr_factor(10, 100, 10, c) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, c) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, c) == pytest.approx(0.0, abs=1e-9)


def _train(digits_small, seed, technique="standard", **kw):
    train, test = digits_small
    seed_everything(seed)
    model = create_model("lenet5", image_size=32)
    metrics = train_classifier(model, train, test, quiet(epochs=2, batch_size=32, seed=seed, **kw), technique)
    return model, metrics


def test_same_seed_same_weights(digits_small):
    a, ma = _train(digits_small, 3, "cutmix")
    b, mb = _train(digits_small, 3, "cutmix")
    c, _ = _train(digits_small, 4, "cutmix")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert ma["clean_accuracy"] == mb["clean_accuracy"]
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values(), strict=True))


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(digits_small, tmp_path):
    train, test = digits_small
    kw = {"epochs": 3, "batch_size": 32, "ema_decay": 0.9, "seed": 1}

    seed_everything(1)
    full = create_model("lenet5", image_size=32)
    full_metrics = train_classifier(full, train, test, quiet(checkpoint_dir=str(tmp_path / "a"), **kw), "mixup")

    def stop_after_first(trainer, epoch, metrics):
        if epoch == 1:
            raise Interrupt

    seed_everything(1)
    part = create_model("lenet5", image_size=32)
    with pytest.raises(Interrupt):
        train_classifier(
            part, train, test, quiet(checkpoint_dir=str(tmp_path / "b"), **kw), "mixup", on_epoch_end=stop_after_first
        )
    assert (tmp_path / "b" / "last.pt").is_file() and (tmp_path / "b" / "config.yaml").is_file()

    seed_everything(99)  # the resumed process starts from a different RNG state and fresh weights
    resumed = create_model("lenet5", image_size=32)
    out = train_classifier(resumed, train, test, quiet(checkpoint_dir=str(tmp_path / "b"), resume=True, **kw), "mixup")
    assert out["epochs"] == 3 and len(out["history"]) == 3
    for (k, va), vb in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert out["clean_accuracy"] == full_metrics["clean_accuracy"]  # EMA weights resumed too

    with pytest.raises(ValueError, match="different recipe"):
        train_classifier(
            create_model("lenet5", image_size=32),
            train,
            test,
            quiet(checkpoint_dir=str(tmp_path / "b"), resume=True, **{**kw, "epochs": 4}),
            "mixup",
        )


def test_final_checkpoint_and_model_card(digits_small, tmp_path):
    train, test = digits_small
    seed_everything(0)
    model = create_model("vit_tiny", image_size=32, **TINY_VIT)
    metrics = train_classifier(
        model,
        train,
        test,
        quiet(epochs=1, batch_size=64),
        "label_smoothing",
        save_to=tmp_path / "m.safetensors",
        card={"model_kwargs": TINY_VIT},
    )
    loaded, card = load_checkpoint(metrics["checkpoint"])
    x = torch.rand(4, 3, 32, 32)
    model.eval()
    assert torch.allclose(model(x), loaded(x), atol=1e-6)
    assert card["technique"] == "label_smoothing" and card["dataset"] == "digits" and card["image_size"] == 32
    assert card["clean_accuracy"] == pytest.approx(metrics["clean_accuracy"])
    assert card["config"]["label_smoothing"] == 0.1 and card["arch"] == "vit_tiny"
    assert "git_commit" in card and card["robustvision_version"]


def test_trainer_rejects_nan_loss(digits_small):
    train, _ = digits_small
    model = create_model("lenet5", image_size=32)
    with torch.no_grad():
        model.net.fc3.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="lower --lr"):
        Trainer(model, train, None, quiet(epochs=1)).fit()


# ---- zoo presets -----------------------------------------------------------------------------------------------


def test_default_preset_meets_the_issue():
    from robustvision.models import MODELS

    models = {m.model for m in DEFAULT_PRESET.members}
    families = [MODELS.meta(m)["entry"].family for m in models]
    assert len(models) >= 6 and all(families.count(f) >= 2 for f in ("cnn", "transformer", "mlp"))
    per_model = {}
    for m in DEFAULT_PRESET.members:
        per_model.setdefault(m.model, set()).add(m.technique)
        create_technique(m.technique)
        member_config(DEFAULT_PRESET, m)
    assert max(len(t - {"standard"}) for t in per_model.values()) >= 3
    keys = [member_key(DEFAULT_PRESET, m) for m in DEFAULT_PRESET.members]
    assert len(set(keys)) == len(keys)


def test_ensure_zoo_trains_once_then_reuses(monkeypatch):
    from robustvision.training import zoo_presets

    preset = ZooPreset(
        "tiny",
        "digits",
        (
            ZooMember("lenet5"),
            ZooMember("lenet5", "label_smoothing", overrides={"epochs": 1}),
            ZooMember("lenet5", "mixup", overrides={"epochs": 1}),
        ),
        base={"epochs": 2, "batch_size": 128, "progress": False, "eval_every": 0},
        image_size=16,
        min_accuracy=0.0,
    )
    first = ensure_zoo(preset, device="cpu", progress=False, only=["lenet5/standard"])  # in this process
    assert [(n, t) for n, t, _ in first] == [("lenet5", "standard")]
    everything = ensure_zoo(preset, device="cpu", progress=False, jobs=2)  # the other two, in 2 worker processes
    assert [(n, t) for n, t, _ in everything] == [("lenet5", t) for t in ("standard", "label_smoothing", "mixup")]
    assert everything[0] == first[0]
    assert all(p.is_file() and p.with_suffix(".json").is_file() for _, _, p in everything)
    _, card = load_checkpoint(everything[1].checkpoint_path)
    assert card["epochs"] == 1 and card["zoo_preset"] == "tiny" and 0.0 <= card["clean_accuracy"] <= 1.0
    assert not list((everything[0].checkpoint_path.parent.parent / ".work").glob("*"))  # work dirs cleaned

    def boom(*a, **k):
        raise AssertionError("a cached member was trained again")

    monkeypatch.setattr(zoo_presets, "_train_member", boom)
    assert ensure_zoo(preset, device="cpu", progress=False) == everything
    with pytest.raises(ValueError, match="matches no member"):
        ensure_zoo(preset, only=["vit_tiny"], progress=False)


@pytest.mark.slow
def test_default_zoo_reaches_90_percent():
    import json

    for name, technique, path in ensure_zoo("default", device="cpu", progress=False):
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["clean_accuracy"] >= 0.9, (name, technique, card["clean_accuracy"])


def test_random_translate_is_a_zero_filled_shift():
    import torch.nn.functional as F

    from robustvision.training.techniques import random_translate

    x = torch.rand(6, 3, 8, 8)
    out = random_translate(x, 2, torch.Generator().manual_seed(0))
    offsets = torch.randint(0, 5, (6, 2), generator=torch.Generator().manual_seed(0)).tolist()
    padded = F.pad(x, (2, 2, 2, 2))
    expected = torch.stack([padded[i, :, dy : dy + 8, dx : dx + 8] for i, (dy, dx) in enumerate(offsets)])
    assert torch.equal(out, expected)


# ---- the training kit: schedule, progress bar, loss hook and callbacks ----------------------------------------------


def test_schedule_is_shared_and_replays_the_trainer_factor():
    from robustvision.training.schedule import lambda_lr, warmup_cosine

    c = TrainConfig(warmup_start=0.1, min_lr=0.05)
    for step in (0, 3, 10, 40, 99, 100):
        assert lr_factor(step, 100, 10, c) == warmup_cosine(step, 100, 10, warmup_start=0.1, min_factor=0.05)
    assert warmup_cosine(70, 100, 10, schedule="constant") == 1.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = lambda_lr(opt, total=4, warmup=2)
    rates = []
    for _ in range(4):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([0.0, 1.0, 2.0, 1.0])


def test_loss_hook_replaces_the_technique_loss_and_callbacks_fire():
    seen: list[tuple[str, int]] = []
    calls = []

    def loss_fn(trainer, images, labels, generator):
        calls.append(images.shape[0])
        logits = trainer.model(images)
        return torch.nn.functional.cross_entropy(logits, labels) * 0.0 + logits.pow(2).mean(), logits

    model = create_model("lenet5", image_size=16, num_classes=4)
    trainer = Trainer(model, toy_set(), None, quiet(epochs=2, batch_size=8), loss_fn=loss_fn)
    trainer.add_callback("on_batch_end", lambda t: seen.append(("batch", t.step)))
    trainer.add_callback("on_epoch_end", lambda t: seen.append(("epoch", t.epoch)))
    trainer.fit()
    assert calls == [8, 8, 8, 8]
    assert seen == [("batch", 1), ("batch", 2), ("epoch", 1), ("batch", 3), ("batch", 4), ("epoch", 2)]
    assert math.isfinite(trainer.last_loss)
    with pytest.raises(ValueError, match="unknown event 'on_step'"):
        trainer.add_callback("on_step", print)


def test_progress_bar_has_the_info_field():
    from robustvision.training.progress import progress_bar

    with progress_bar(enabled=False) as bar:
        task = bar.add_task("x", total=2, info="")
        bar.update(task, advance=2, info="done")
        assert bar.tasks[0].completed == 2


def test_augmix_view_is_reproducible_and_leaves_the_global_generator_alone():
    from robustvision.training.techniques import augmix_view

    images = torch.rand(4, 3, 16, 16)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    a = augmix_view(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), before)  # the block-scoped torch.manual_seed does not leak
    b = augmix_view(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
