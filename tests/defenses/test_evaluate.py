"""Multi-perturbation evaluation: union <= per-norm <= clean, GBN adaptive attacks and gate accuracy, bad input."""

from __future__ import annotations

import pytest
import torch

from robustvision.defenses.evaluate import (
    ATTACK_PRESETS,
    AttackSpec,
    BallViolation,
    attack_list,
    evaluate_robustness,
    format_report,
    gate_accuracy,
    parse_attack,
)
from robustvision.models import create_model
from robustvision.noises.base import NOISES
from robustvision.registry import UnknownNameError

BUDGETS = {"l1": 10.0, "l2": 2.0, "linf": 0.3}
QUICK = [
    AttackSpec("linf", "pgd_linf", {"steps": 3}),
    AttackSpec("l2", "pgd_l2", {"steps": 3}),
    AttackSpec("l1", "pgd_l1_topk", {"steps": 3}),
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    """A batch the untrained model classifies correctly (labels = its own predictions), so attacks have work."""
    torch.manual_seed(0)
    model = create_model("lenet5", in_chans=1, image_size=28).eval()
    x = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_union_is_below_every_norm_and_norms_below_clean(data):
    model, x, y = data
    report = evaluate_robustness(model, x, y, BUDGETS, QUICK)
    assert report.clean == 1.0
    assert set(report.per_norm) == {"linf", "l2", "l1"}
    for acc in report.per_norm.values():
        assert 0.0 <= acc <= report.clean
    assert report.union <= min(report.per_norm.values())
    assert report.union < 1.0  # an untrained net is not robust at these budgets
    assert not report.is_gbn and report.e2e_per_norm is None
    assert len(report.per_attack) == 3


def test_gbn_report_has_end_to_end_adaptive_and_gate_accuracy(gbn_lenet, data):
    model, x, y = data
    gbn = gbn_lenet(state=model.state_dict())
    report = evaluate_robustness(gbn, x, y, BUDGETS, QUICK, adaptive=True)
    assert report.is_gbn
    # 3 end-to-end attacks + 3 norms x 4 routed branches + 3 norms x 4 gate-steering targets.
    assert len(report.per_attack) == 3 + 3 * 4 + 3 * 4
    assert [a["mode"] for a in report.per_attack] == ["end-to-end"] * 3 + ["branch"] * 12 + ["gate"] * 12
    assert [a["branch"] for a in report.per_attack[3:7]] == ["clean", "l1", "l2", "linf"]
    assert set(report.branch_broken) == set(report.gate_broken) == {"linf", "l2", "l1"}
    for p in report.per_norm:
        assert report.per_norm[p] <= report.e2e_per_norm[p]
    assert report.union <= report.e2e_union
    assert set(report.gate_accuracy) == {"net.bn1", "net.bn2"}
    for accs in report.gate_accuracy.values():
        assert "clean" in accs and all(0 <= v <= 1 for v in accs.values())
    assert "union" in format_report(report)
    no_adaptive = evaluate_robustness(gbn, x, y, BUDGETS, QUICK, adaptive=False)
    assert len(no_adaptive.per_attack) == 3 and no_adaptive.branch_broken is None
    branch_only = evaluate_robustness(gbn, x, y, BUDGETS, QUICK, adaptive_modes=("branch",))
    assert len(branch_only.per_attack) == 15 and branch_only.gate_broken is None
    with pytest.raises(ValueError, match="unknown adaptive attack modes"):
        evaluate_robustness(gbn, x, y, BUDGETS, QUICK, adaptive_modes=("eot",))


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_gate_steering_attack_stays_in_ball_and_moves_the_gate(gbn_lenet, data, norm):
    from robustvision.defenses.attacks import GateSteeringPGD
    from robustvision.noises.adversarial import lp_norm

    model, x, y = data
    gbn = gbn_lenet(state=model.state_dict())
    attack = GateSteeringPGD(gbn, norm=norm, eps=BUDGETS[norm], domain="l2", steps=10, weight=100.0)
    adv = attack(x, y, generator=torch.Generator().manual_seed(0))
    assert adv.min() >= 0 and adv.max() <= 1
    assert (lp_norm(adv - x, norm) <= BUDGETS[norm] * (1 + 1e-4) + 1e-5).all()

    def mean_l2_weight(images):
        with torch.no_grad():
            gbn(images)
        return sum(torch.softmax(m.last_gate_logits, 1)[:, 2].mean() for m in (gbn.net.bn1, gbn.net.bn2))

    assert mean_l2_weight(adv) > mean_l2_weight(x)
    assert not gbn.training and gbn.net.bn1.route is None


def test_gate_accuracy_counts_the_gates_argmax(gbn_lenet, data):
    model, x, _ = data
    gbn = gbn_lenet(state=model.state_dict())
    with torch.no_grad():  # make every gate pick branch "l2" whatever it sees
        gbn.net.bn1.gate.fc.bias.copy_(torch.tensor([0.0, 0.0, 1e4, 0.0]))
        gbn.net.bn2.gate.fc2.bias.copy_(torch.tensor([0.0, 0.0, 1e4, 0.0]))
    acc = gate_accuracy(gbn, {"clean": x, "l2": x, "l7": x})
    assert acc == {"net.bn1": {"clean": 0.0, "l2": 1.0}, "net.bn2": {"clean": 0.0, "l2": 1.0}}


def test_optional_missing_attacks_are_skipped_and_listed(data):
    model, x, y = data
    specs = [*QUICK, AttackSpec("l2", "no_such_attack_xyz", {}, optional=True)]
    report = evaluate_robustness(model, x, y, BUDGETS, specs, adaptive=False)
    assert report.skipped == ["l2:no_such_attack_xyz"]


def test_unknown_attack_norm_and_budget_errors(data):
    model, x, y = data
    with pytest.raises(UnknownNameError, match="pgd_linfty"):
        evaluate_robustness(model, x, y, BUDGETS, [AttackSpec("linf", "pgd_linfty", {})])
    with pytest.raises(ValueError, match="is an l2 attack, but it was listed under linf"):
        evaluate_robustness(model, x, y, BUDGETS, [AttackSpec("linf", "pgd_l2", {})])
    with pytest.raises(ValueError, match="unknown norm 'l3'"):
        parse_attack("l3=pgd_l2")
    with pytest.raises(ValueError, match="no l2 budget"):
        evaluate_robustness(model, x, y, {"linf": 0.3}, [AttackSpec("l2", "pgd_l2", {"steps": 1})])
    with pytest.raises(ValueError, match="unknown attack preset"):
        attack_list("strongest")


def test_an_attack_leaving_its_ball_is_caught(data, monkeypatch):
    model, x, y = data

    class Cheat:
        def __init__(self, model=None, eps=0.0, **kw):
            self.eps = eps

        def __call__(self, images, labels=None, model=None, generator=None):
            return (images + 2 * self.eps).clamp(0, 1)

    monkeypatch.setitem(NOISES._builders, "cheat_linf", Cheat)
    monkeypatch.setitem(NOISES._meta, "cheat_linf", {"norm": "linf"})
    with pytest.raises(BallViolation, match="left its linf ball"):
        evaluate_robustness(model, x, y, BUDGETS, [AttackSpec("linf", "cheat_linf", {})])


def test_parse_attack_and_presets():
    spec = parse_attack("linf=pgd_linf:steps=100,restarts=4,rel_stepsize=0.05")
    assert spec == AttackSpec("linf", "pgd_linf", {"steps": 100, "restarts": 4, "rel_stepsize": 0.05})
    assert [s.norm for s in attack_list("quick", norms=["l2"])] == ["l2"]
    for preset in ATTACK_PRESETS.values():
        for s in preset:
            assert s.optional or s.name in NOISES, s
