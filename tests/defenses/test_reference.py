"""The reference recipe and the GBN diagnosis: early-stopping reference attacks, the top-k l1 step, routing shares,
perfect routing against a one-hot gate, E-AT's alternation, gate-once and mixture variants, recipes and bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from robustvision.defenses.evaluate import (
    AttackSpec,
    branch_accuracy,
    evaluate_robustness,
    perfect_routing,
    predict,
    routing_shares,
)
from robustvision.defenses.gbn import force_gate, gbn_layers, gbn_spec, route_domain
from robustvision.defenses.multi_perturbation import (
    REFERENCE_ATTACKS,
    StepContext,
    create_method,
    pgd_examples,
    reference_attack,
    sphere_start,
)
from robustvision.defenses.train import (
    DefenseConfig,
    build_model,
    clean_accuracy,
    load_defense,
    save_defense,
    train_defense,
)
from robustvision.noises.adversarial import clip_to_box_and_ball, lp_norm, steepest_step
from robustvision.noises.l1_topk import lp_pgd
from robustvision.runtime import make_generator

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGETS = {"l1": 10.0, "l2": 2.0, "linf": 0.3}
TOL = {"l1": 1e-3, "l2": 1e-5, "linf": 1e-6}


@pytest.fixture(scope="module")
def batch(gbn_lenet):
    """Images with pixels on both box bounds (as MNIST), labelled by an untrained model: half right, half wrong."""
    model = gbn_lenet()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28, generator=g)
    x[:, :, :5] = 0.0
    x[:, :, -5:] = 1.0
    with torch.no_grad():
        y = predict(model, x)
    y[4:] = (y[4:] + 1) % 10  # misclassified from the start
    return model, x, y


class Recorder(torch.nn.Module):
    """Wraps a model and keeps every input it was called with."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_reference_attacks_stop_moving_an_example_once_it_is_misclassified(batch, norm):
    model, x, y = batch
    rec = Recorder(model)
    iters, alpha, _ = REFERENCE_ATTACKS[norm]
    adv = lp_pgd(
        rec, x, y, norm=norm, eps=BUDGETS[norm], steps=8, alpha=alpha * iters / 8, early_stop=True,
        k_per_step=True, freeze_box=True, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert len(rec.inputs) == 8
    points = [*rec.inputs, adv]
    moved_any = False
    for t in range(8):
        with torch.no_grad():
            wrong = model(points[t]).argmax(1) != y
        assert torch.equal(points[t + 1][wrong], points[t][wrong]), f"a misclassified example moved at step {t}"
        moved_any |= bool((points[t + 1][~wrong] != points[t][~wrong]).any())
    assert moved_any  # the correctly classified ones do move
    assert torch.equal(adv[4:], x[4:])  # wrong from the start: never moved from the zero start
    free = lp_pgd(model, x, y, norm=norm, eps=BUDGETS[norm], steps=3, alpha=alpha * iters / 3)
    assert not torch.equal(free[4:], x[4:])  # without the early stop they move


def test_reference_training_examples_keep_misclassified_ones_at_their_start(batch):
    model, x, y = batch
    ctx = StepContext(budgets=BUDGETS, attack=reference_attack(4), generator=torch.Generator().manual_seed(3))
    with route_domain(model, "l2"):
        adv = pgd_examples(model, x, y, "l2", ctx)
    start = sphere_start(x.shape, BUDGETS["l2"], torch.Generator().manual_seed(3))  # the same first draws
    expected = clip_to_box_and_ball(x, x + start, "l2", BUDGETS["l2"])
    with route_domain(model, "l2"), torch.no_grad():
        wrong_at_start = model(expected).argmax(1) != y
    assert wrong_at_start[4:].all()
    torch.testing.assert_close(adv[wrong_at_start], expected[wrong_at_start], rtol=0, atol=0)
    assert (lp_norm(adv - x, "l2") <= BUDGETS["l2"] + TOL["l2"]).all()


def test_sphere_start_lies_on_the_l2_sphere():
    d = sphere_start(torch.Size([5, 1, 28, 28]), 2.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(lp_norm(d, "l2"), torch.full((5,), 2.0))


@pytest.mark.parametrize("freeze_box", [False, True])
def test_l1_topk_step_keeps_the_l1_budget_and_the_box(batch, freeze_box):
    model, x, y = batch
    for steps in (1, 5, 20):
        adv = lp_pgd(
            model, x, y, norm="l1", eps=BUDGETS["l1"], steps=steps, alpha=50.0 / steps, k_per_step=True,
            freeze_box=freeze_box, generator=torch.Generator().manual_seed(steps),
        )  # fmt: skip
        assert (lp_norm(adv - x, "l1") <= BUDGETS["l1"] + TOL["l1"]).all()
        assert adv.min() >= 0 and adv.max() <= 1
    grad = torch.randn_like(x)
    step = steepest_step(grad, "l1", 1.0, adv=x, l1_k=10, l1_gap=0.05, l1_freeze_box=freeze_box)
    assert ((step != 0).flatten(1).sum(1) == 10).all()  # k coordinates of alpha / k: l1 length alpha
    torch.testing.assert_close(lp_norm(step, "l1"), torch.ones(len(x)))
    on_box = (x <= 0) | (x >= 1)
    outward = ((grad < 0) & (x <= 0.05)) | ((grad > 0) & (x >= 0.95))
    assert (step[outward] == 0).all()
    if freeze_box:
        assert (step[on_box] == 0).all()


def test_routing_shares_sum_to_one_per_norm_and_layer(gbn_lenet, batch):
    model, x, _ = batch
    for m in (model, gbn_lenet(seed=1, gate_once=True)):
        shares = routing_shares(m, {"clean": x, "linf": (x + 0.1).clamp(0, 1)})
        assert set(shares) == {"clean", "linf"}
        for per_layer in shares.values():
            assert set(per_layer) == {"net.bn1", "net.bn2"}
            for row in per_layer.values():
                assert list(row) == ["clean", "l1", "l2", "linf"]
                assert sum(row.values()) == pytest.approx(1.0)
    tied = gbn_lenet(seed=1, gate_once=True)
    shares = routing_shares(tied, {"clean": x})
    assert shares["clean"]["net.bn1"] == shares["clean"]["net.bn2"]  # one decision, reused


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_perfect_routing_equals_branch_alone_accuracy_under_a_one_hot_gate(batch, norm):
    model, x, y = batch
    for layer in (m for _, m in gbn_layers(model)):  # branches that differ, so routing matters
        g = torch.Generator().manual_seed(5)
        for bn in layer.bns:
            with torch.no_grad():
                bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.1)
    spec = AttackSpec(norm, {"linf": "pgd_linf", "l2": "pgd_l2", "l1": "pgd_l1_topk"}[norm], {"steps": 3})
    masks = perfect_routing(model, x, y, BUDGETS, {norm: [spec]}, seed=7)
    # The same attack, with the same randomness, on the mixture whose every gate is forced one-hot to the branch.
    from robustvision.noises import create_noise

    one_hot = F.one_hot(torch.tensor(["clean", "l1", "l2", "linf"].index(norm)), 4).float()
    with route_domain(model, norm):
        routed = predict(model, x)
    with force_gate(model, one_hot):
        assert torch.equal(predict(model, x), routed)
        ok = predict(model, x) == y
        idx = ok.nonzero().squeeze(1)
        attack = create_noise(spec.name, model=model, eps=BUDGETS[norm], **spec.kwargs)
        adv = attack(x[idx], y[idx], generator=make_generator(7, "gbn-perfect-routing", norm, spec.label(), 0))
        ok[idx[predict(model, adv) != y[idx]]] = False
        forced = branch_accuracy(model, adv, y[idx])
    assert torch.equal(masks[norm], ok)
    assert forced["mixture"] == forced[norm]  # the one-hot mixture is that branch alone


def test_evaluation_reports_the_routing_diagnosis(batch):
    model, x, y = batch
    specs = [AttackSpec(n, a, {"steps": 2}) for n, a in (("linf", "pgd_linf"), ("l2", "pgd_l2"), ("l1", "pgd_l1_topk"))]
    report = evaluate_robustness(model, x[:4], y[:4], BUDGETS, specs, adaptive_modes=("branch",))
    assert set(report.perfect_routing_per_norm) == {"linf", "l2", "l1"}
    assert report.perfect_routing_union <= min(report.perfect_routing_per_norm.values())
    assert set(report.routing) <= {"clean", "linf", "l2", "l1"} and "clean" in report.routing
    for accs in report.branch_alone.values():
        assert set(accs) == {"clean", "l1", "l2", "linf", "mixture"}
    plain = evaluate_robustness(model, x[:4], y[:4], BUDGETS, specs, adaptive=False, diagnose=False)
    assert plain.routing is None and plain.perfect_routing_union is None
    with pytest.raises(ValueError, match="routing_attacks must be 'first' or 'all'"):
        evaluate_robustness(model, x[:4], y[:4], BUDGETS, specs, routing_attacks="some")


def test_eat_alternates_l1_and_linf_from_batch_to_batch(toy_bars):
    eat = create_method("eat")
    assert [eat.norm_at(s) for s in range(5)] == ["l1", "linf", "l1", "linf", "l1"]
    cfg = DefenseConfig(method="eat", budgets={"l1": 2.0, "l2": 0.5, "linf": 0.05}, epochs=1, batch_size=8,
                        eps_ramp_epochs=0, max_steps_per_epoch=4)  # fmt: skip
    model = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    seen = []
    train_defense(model, toy_bars(32), cfg, callback=lambda step, total, stats: seen.append(stats))
    assert [s["trained_l1"] for s in seen] == [1.0, 0.0, 1.0, 0.0]
    assert [("acc_l1" in s, "acc_linf" in s) for s in seen] == [(True, False), (False, True)] * 2
    with pytest.raises(ValueError, match="E-AT alternates l1 and linf"):
        eat.norms(("l2", "linf"))


def test_reference_recipe_settings_and_rescaled_attacks():
    cfg = DefenseConfig.from_recipe("reference", method="avg")
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.1, 0.8, 0.0, 64)
    assert (cfg.schedule, cfg.eps_ramp_epochs, cfg.conv1_padding, cfg.avg_clean, cfg.keep_best) == (
        "plateau", 0.0, 0, True, True
    )  # fmt: skip
    a = cfg.attack
    assert a.early_stop and a.l1_k_per_step and a.l1_freeze_box
    assert [(a.steps_for(n), a.alpha(1.0, n), a.start_for(n)) for n in ("linf", "l2", "l1")] == [
        (50, 0.01, "zero"), (100, 0.1, "sphere"), (50, 1.0, "zero")
    ]  # fmt: skip
    short = reference_attack(10)
    assert [short.steps_for(n) for n in ("linf", "l2", "l1")] == [10, 10, 10]
    assert [short.alpha(1.0, n) for n in ("linf", "l2", "l1")] == pytest.approx([0.05, 1.0, 5.0])
    fast = DefenseConfig.from_recipe("fast", method="gbn", attack_steps=3)
    assert fast.attack.steps == 3 and not fast.attack.early_stop and fast.conv1_padding is None
    with pytest.raises(ValueError, match="unknown recipe 'referense'; did you mean 'reference'"):
        DefenseConfig.from_recipe("referense", method="gbn")
    with pytest.raises(ValueError, match="unknown gate adversary 'mix'"):
        DefenseConfig(method="gbn", gate_adversary="mix")
    with pytest.raises(ValueError, match="apply to --method gbn only"):
        DefenseConfig(method="avg", gate_adversary="mixture")


def test_reference_gbn_variants_train_and_round_trip(toy_bars, tmp_path):
    data = toy_bars(48)
    cfg = DefenseConfig.from_recipe(
        "reference", attack_steps=2, method="gbn", gate_adversary="mixture", gate_once=True, epochs=2,
        batch_size=16, budgets={"l1": 2.0, "l2": 0.5, "linf": 0.05},
    )  # fmt: skip
    model = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    assert model.net.conv1.padding == (0, 0) and model.net.bn1.feature_shape == (6, 24, 24)
    assert model.net.bn2.gate is None and gbn_spec(model)["gate_once"]
    history = train_defense(model, data, cfg, val_set=data)
    assert {"acc_mix_linf", "gate_acc_mix_l1"} <= set(history[0].stats)
    # keep_best: the final weights are those of the best validation epoch.
    assert clean_accuracy(model, data) == max(r.val_clean_acc for r in history)
    path = save_defense(model, tmp_path / "gbn.safetensors", cfg, history)
    loaded, card = load_defense(path)
    assert card["defense"]["recipe"] == "reference" and loaded.net.bn2.gate_source is loaded.net.bn1
    x = data.tensors()[0][:6]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_avg_reference_recipe_includes_the_clean_loss(toy_bars):
    cfg = DefenseConfig.from_recipe("reference", attack_steps=1, method="avg", epochs=1, batch_size=16,
                                    max_steps_per_epoch=1, keep_best=False, schedule="cosine")  # fmt: skip
    model = build_model(cfg, num_classes=4, in_chans=1, image_size=28)
    history = train_defense(model, toy_bars(16), cfg)
    assert set(history[0].stats) == {"acc_clean", "acc_l1", "acc_l2", "acc_linf"}


def test_pgd_l1_topk_is_a_noise_without_importing_the_defences(repo_root):
    code = (
        "import sys; from robustvision.noises import list_noises, NOISES; "
        "print('pgd_l1_topk' in list_noises(), NOISES.meta('pgd_l1_topk')['norm'], "
        "any(m.startswith('robustvision.defenses') for m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["True", "l1", "False"]
