"""The defence and DAS target recipes run through the Trainer's hooks to the same weights, bit for bit, as plain
reference loops of the same recipes (kept below); the Trainer's own default step matches a plain loop too.

Each reference loop is written the way the recipe is published: comparing against it on the machine the tests run on
keeps the check exact without recording platform-dependent digests.
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from robustvision.defenses.gbn import gate_parameters
from robustvision.defenses.multi_perturbation import StepContext, create_method
from robustvision.defenses.train import DefenseConfig, _lr_factor, build_model, clean_accuracy, train_defense
from robustvision.models import create_model
from robustvision.physical import train as das_train
from robustvision.physical.targets import CarDetector, build_classifier, build_detector
from robustvision.runtime import make_generator, seed_from_key, seeded
from robustvision.training import TrainConfig, Trainer
from robustvision.training.techniques import random_translate, training_loss
from robustvision.training.trainer import TensorPairs, _param_groups, lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")
EPS = {"l1": 2.0, "l2": 0.5, "linf": 0.05}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- the defence recipe ----------------------------------------------------------------------------------------------


def _reference_defense(model, train_set, config, val_set):
    """The defence recipe as a plain loop: one run generator, SGD (+ the gates' SGD), cosine per step or plateau."""
    method = create_method(config.method)
    norms = method.norms(config.norms)
    images, labels = train_set.tensors()
    n = len(labels)
    steps_per_epoch = math.ceil(n / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, int(config.max_steps_per_epoch))
    total = steps_per_epoch * config.epochs
    gate_ids = {id(p) for p in gate_parameters(model)}
    main = [p for p in model.parameters() if id(p) not in gate_ids]
    opt = torch.optim.SGD(main, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    gates = gate_parameters(model)
    gate_opt = torch.optim.SGD(gates, lr=config.gate_lr, momentum=config.gate_momentum) if gates else None
    generator = make_generator(config.seed, "defense-train", config.method)
    ramp_steps = max(1, int(round(config.eps_ramp_epochs * steps_per_epoch)))
    plateau = config.schedule == "plateau"
    schedulers = [
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            o, "max", factor=config.plateau_factor, patience=config.plateau_patience, eps=1e-6
        )
        for o in (opt, gate_opt)
        if o is not None and plateau
    ]
    best_acc, best_state, records, step = float("-inf"), None, [], 0
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        loss_sum, gate_sum, sums = 0.0, 0.0, {}
        for b in range(steps_per_epoch):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            factor = min(1.0, (step + 1) / ramp_steps) if config.eps_ramp_epochs > 0 else 1.0
            ctx = StepContext(
                budgets={k: v * factor for k, v in config.budgets.items()},
                attack=config.attack,
                generator=generator,
                norms=norms,
                step=step,
                avg_clean=config.avg_clean,
                gate_adversary=config.gate_adversary,
            )
            if not plateau:
                for o, lr in ((opt, config.lr), (gate_opt, config.gate_lr)):
                    for g in o.param_groups if o is not None else []:
                        g["lr"] = lr * _lr_factor(step, total)
            model.train()
            out = method.losses(model, images[idx], labels[idx], ctx)
            loss = out.classification + (out.gate if out.gate is not None else 0.0)
            opt.zero_grad(set_to_none=True)
            if gate_opt is not None:
                gate_opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if gate_opt is not None:
                gate_opt.step()
            loss_sum += float(out.classification.detach())
            gate_sum += float(out.gate.detach()) if out.gate is not None else 0.0
            for k, v in out.stats.items():
                sums[k] = sums.get(k, 0.0) + v
            step += 1
        val = clean_accuracy(model, val_set)
        for sched in schedulers:
            sched.step(val)
        if config.keep_best and val > best_acc:
            best_acc, best_state = val, copy.deepcopy(model.state_dict())
        count = steps_per_epoch
        records.append(
            {
                "epoch": epoch + 1,
                "loss": loss_sum / count,
                "gate_loss": gate_sum / count if gate_opt is not None else None,
                "stats": {k: v / count for k, v in sums.items()},
                "val_clean_acc": val,
                "lr": opt.param_groups[0]["lr"],
            }
        )
    if best_state is not None:
        model.load_state_dict(best_state)
    return records


@pytest.mark.parametrize(
    ("recipe", "method"), [("fast", "gbn"), ("fast", "max"), ("reference", "gbn"), ("reference", "avg")]
)
def test_defense_training_matches_the_reference_loop_bit_for_bit(recipe, method, toy_bars):
    data, val = toy_bars(40, 0), toy_bars(16, 1)
    # patience 0 on a 3-epoch run: the plateau schedule lowers the rate at least once when accuracy stalls
    overrides = {"plateau_patience": 0, "max_steps_per_epoch": 2} if recipe == "reference" else {}
    cfg = DefenseConfig.from_recipe(
        recipe, attack_steps=2, method=method, budgets=EPS, epochs=3, batch_size=16, **overrides
    )
    a = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    b = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    history = train_defense(a, data, cfg, val_set=val)
    with seeded(cfg.seed):
        expected = _reference_defense(b, data, cfg, val)
    assert _same_weights(a, b)
    got = [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in history]
    assert got == expected


# ---- the DAS target recipe -------------------------------------------------------------------------------------------


def _reference_schedule(opt, total):
    warm = max(1, total // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))
    )


def _reference_target(model, images, labels, boxes, config):
    """The DAS target recipe as a plain loop; ``boxes`` None trains a classifier, else the one-box detector."""
    g = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = _reference_schedule(opt, config.epochs * math.ceil(len(images) / config.batch_size))
    size = images.shape[-1]
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=g)
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            x = images[idx].float() / 255
            if boxes is None:
                x, _ = das_train._augment(x, None, g)
                out = model(das_train._shift(x, config.shift, g))
                loss = F.cross_entropy(out, labels[idx])
            else:
                y = labels[idx].float()
                x, bx = das_train._augment(x, boxes[idx], g)
                out = model(x)
                loss = F.binary_cross_entropy_with_logits(out[:, 0], y)
                pos = y > 0
                if pos.any():
                    pred = CarDetector.boxes(out[pos], size)
                    gt = bx[pos]
                    loss = loss + F.l1_loss(pred / size, gt / size) * 5 + (1 - das_train.box_iou(pred, gt)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def _car_batch(n: int = 21, size: int = 32):
    g = torch.Generator().manual_seed(5)
    images = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 2, (n,), generator=g)
    boxes = torch.rand(n, 4, generator=g) * 12
    boxes[:, 2:] += 14
    return images, labels, boxes


@pytest.mark.parametrize(("arch", "shift"), [("das_resnet", 2), ("das_vit", 0)])
def test_das_classifier_training_matches_the_reference_loop_bit_for_bit(arch, shift):
    images, labels, _ = _car_batch()
    cfg = das_train.TargetTrainConfig(epochs=2, batch_size=8, shift=shift, seed=1)
    a, b = build_classifier(arch, 2, 32, seed=1), build_classifier(arch, 2, 32, seed=1)
    steps = []
    stats = das_train.train_classifier(a, images, labels, cfg, progress=lambda s, t, loss: steps.append((s, t)))
    _reference_target(b, images, labels, None, cfg)
    assert _same_weights(a, b) and not a.training
    assert steps == [(s, 6) for s in range(1, 7)]  # 21 images, batch 8: the last batch of 5 is kept
    assert 0 <= stats["train_acc"] <= 1 and math.isfinite(stats["train_loss"])


def test_das_detector_training_matches_the_reference_loop_bit_for_bit():
    images, labels, boxes = _car_batch()
    cfg = das_train.TargetTrainConfig(epochs=2, batch_size=8, seed=1)
    a, b = build_detector(32, seed=1), build_detector(32, seed=1)
    stats = das_train.train_detector(a, images, labels, boxes, cfg)
    _reference_target(b, images, labels, boxes, cfg)
    assert _same_weights(a, b) and math.isfinite(stats["train_loss"])


# ---- the Trainer's default step --------------------------------------------------------------------------------------


def test_the_default_step_matches_a_plain_loop_bit_for_bit(toy_bars):
    """Keyed per-epoch generators, the weights-only weight decay, warm-up + cosine per step, the last batch dropped."""
    data = toy_bars(40, 0)
    cfg = TrainConfig(epochs=2, batch_size=16, translate=2, grad_clip=1.0, device="cpu", progress=False, eval_every=0)
    with seeded(0):
        a = create_model("lenet5", num_classes=4, in_chans=1, image_size=28)
    b = copy.deepcopy(a)
    Trainer(a, data, None, cfg).fit()
    opt = torch.optim.SGD(_param_groups(b, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 4, 2, cfg))
    for epoch in range(cfg.epochs):
        torch.manual_seed(seed_from_key(cfg.seed, "torch", epoch, 0))
        g = make_generator(cfg.seed, "augment", epoch, 0)
        order = torch.randperm(40, generator=make_generator(cfg.seed, "order", epoch))
        b.train()
        for i in range(2):  # 40 images, batch 16: two steps, the last 8 images dropped
            idx = order[i * 16 : (i + 1) * 16]
            x = random_translate(data.images[idx], cfg.translate, g)
            loss, _ = training_loss(b, b, x, data.labels[idx], cfg, g, nullcontext)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(b.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
    assert _same_weights(a, b)


# ---- the hook options ------------------------------------------------------------------------------------------------


def _options_trainer(tmp_path, data, epochs: int, **kw) -> Trainer:
    with seeded(0):
        model = create_model("lenet5", num_classes=4, in_chans=1, image_size=28)
    cfg = TrainConfig(
        epochs=epochs, batch_size=8, device="cpu", progress=False, eval_every=0, checkpoint_dir=str(tmp_path), **kw
    )
    return Trainer(
        model,
        TensorPairs(data.images, data.labels),
        None,
        cfg,
        generator=torch.Generator().manual_seed(3),
        drop_last=False,
        optimizers=lambda m: [torch.optim.AdamW(m.parameters(), lr=1e-3)],
        schedulers=lambda t: [torch.optim.lr_scheduler.ReduceLROnPlateau(t.optimizer, "max", patience=0)],
        epoch_metric=lambda t: -float(t.epoch),  # never improves: the plateau schedule cuts the rate every epoch
    )


def test_run_generator_plateau_and_resume_through_the_options(tmp_path, toy_bars):
    data = toy_bars(20, 0)
    full = _options_trainer(tmp_path / "full", data, 3)
    events = []
    full.add_callback("on_epoch_start", lambda t: events.append(t.epoch))
    full.fit()
    assert full.steps_per_epoch == 3 and full.step == 9  # 20 images, batch 8: the last batch of 4 is kept
    assert events == [0, 1, 2]
    assert [h["val_metric"] for h in full.history] == [0.0, -1.0, -2.0]
    assert full.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)  # cut twice by 10 after the first epoch
    # interrupt after one epoch, then resume in a fresh Trainer: the run generator and the plateau state come back
    first = _options_trainer(tmp_path / "part", data, 3)

    def stop(trainer):
        raise KeyboardInterrupt

    first.add_callback("on_epoch_end", stop)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = _options_trainer(tmp_path / "part", data, 3, resume=True)
    resumed.fit()
    assert _same_weights(full.raw_model, resumed.raw_model)


def test_options_are_checked(toy_bars):
    data = toy_bars(8, 0)
    model = create_model("lenet5", num_classes=4, in_chans=1, image_size=28)
    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu", progress=False)
    plateau = lambda t: [torch.optim.lr_scheduler.ReduceLROnPlateau(t.optimizer)]  # noqa: E731
    with pytest.raises(ValueError, match="needs an epoch_metric"):
        Trainer(model, data, None, cfg, schedulers=plateau)
    with pytest.raises(ValueError, match="max_steps_per_epoch must be >= 1"):
        Trainer(model, data, None, cfg, max_steps_per_epoch=0)
    with pytest.raises(ValueError, match="no optimiser"):
        Trainer(model, data, None, cfg, optimizers=lambda m: [])
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        TensorPairs(torch.zeros(2, 1, 4, 4), torch.zeros(3))
