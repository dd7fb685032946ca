"""Contract tests over every adversarial noise, plus the projections and losses they rely on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from robustvision.noises import NOISES, create_noise, list_noises
from robustvision.noises.adversarial import (
    ROBUSTART_BUDGETS,
    lp_norm,
    project_l1_ball,
    project_l1_box,
    robustart_budgets,
    scale_budget,
    steepest_step,
)
from robustvision.noises.apgd import dlr_loss, dlr_targeted_loss
from robustvision.noises.fab import project_hyperplane_box

EPS = {"linf": 0.1, "l2": 0.5, "l1": 2.0}
# Reduced iterations keep the contract fast; full-strength runs are in test_attacks_strength.py (slow).
FAST = {
    "fgsm": {},
    "pgd_linf": {"steps": 3},
    "pgd_l2": {"steps": 3},
    "pgd_l1": {"steps": 3},
    "pgd_l1_topk": {"steps": 3},
    "mim_linf": {"steps": 3},
    "apgd_ce": {"steps": 4},
    "apgd_dlr": {"steps": 4},
    "apgd_t": {"steps": 4, "n_target_classes": 2},
    "apgd_l2": {"steps": 4},
    "apgd_l1": {"steps": 4},
    "apgd_t_l2": {"steps": 4, "n_target_classes": 2},
    "apgd_t_l1": {"steps": 4, "n_target_classes": 2},
    "fab_t": {"steps": 4, "n_target_classes": 2},
    "fab_t_l2": {"steps": 4, "n_target_classes": 2},
    "fab_t_l1": {"steps": 4, "n_target_classes": 2},
    "square_linf": {"n_queries": 20},
    "autoattack_linf": {"apgd_steps": 3, "fab_steps": 3, "n_target_classes": 2, "square_queries": 10},
    "autoattack_l2": {"apgd_steps": 3, "fab_steps": 3, "n_target_classes": 2},
    "cw_l2": {"steps": 5, "binary_search_steps": 2},
}


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 5),
    )


@pytest.fixture
def tiny_model():
    net = tiny_net()
    net.train()
    return net


def test_every_adversarial_noise_is_covered():
    names = set(list_noises(kind="adversarial")) - {"transfer"}
    assert set(FAST) <= names
    mine = {
        n for n in names if NOISES.meta(n).get("family") in {"gradient", "apgd", "fab", "square", "autoattack", "cw"}
    }
    assert mine == set(FAST), f"add the new attacks to FAST: {mine ^ set(FAST)}"


@pytest.mark.parametrize("name", sorted(FAST))
def test_attack_contract(name, tiny_model):
    norm = NOISES.meta(name)["norm"]
    eps = EPS[norm]
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6) % 5
    attack = create_noise(name, eps=eps, **FAST[name])
    running_mean = tiny_model[1].running_mean.clone()
    adv = attack(x, y, tiny_model, generator=torch.Generator().manual_seed(1))
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert torch.isfinite(adv).all()
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert (lp_norm(adv - x, norm) <= eps * (1 + 1e-4) + 1e-6).all()
    assert tiny_model.training, "the model's mode must be restored"
    assert all(p.requires_grad for p in tiny_model.parameters())
    assert torch.equal(tiny_model[1].running_mean, running_mean), "attacks must run the model in eval mode"
    again = attack(x, y, tiny_model, generator=torch.Generator().manual_seed(1))
    assert torch.equal(adv, again), "same generator, same output"
    tiny_model.eval()
    with torch.no_grad():
        clean = (tiny_model(x).argmax(1) == y).float().mean()
        robust = (tiny_model(adv).argmax(1) == y).float().mean()
    assert robust <= clean
    assert attack.params["eps"] == eps and attack.kind.value == "adversarial"


@pytest.mark.parametrize("name", ["pgd_linf", "apgd_ce", "square_linf"])
def test_model_given_at_construction(name, tiny_model):
    x = torch.rand(3, 3, 8, 8)
    y = torch.tensor([0, 1, 2])
    attack = create_noise(name, model=tiny_model, eps=0.05, **FAST[name])
    adv = attack(x, y, generator=torch.Generator().manual_seed(0))
    assert (lp_norm(adv - x, "linf") <= 0.05 + 1e-6).all()


def test_attack_errors(tiny_model):
    x = torch.rand(2, 3, 8, 8)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="needs a model"):
        create_noise("apgd_ce", eps=0.1)(x, y)
    with pytest.raises(ValueError, match="needs the true labels"):
        create_noise("autoattack_linf", eps=0.1)(x, None, tiny_model)
    with pytest.raises(ValueError, match="exceeds"):
        create_noise("square_linf", eps=3.0)
    with pytest.raises(ValueError, match="non-negative"):
        create_noise("fab_t", eps=-1.0)
    with pytest.raises(ValueError, match="APGD loss"):
        create_noise("apgd_ce", eps=0.1, loss="hinge")
    with pytest.raises(ValueError, match="subset"):
        create_noise("autoattack_linf", eps=0.1, components=["apgd_ce", "deepfool"])
    with pytest.raises(ValueError, match="l-inf only"):
        create_noise("autoattack_l2", eps=0.5, components=["square"])
    two_class = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(ValueError, match="at least 4 classes"):
        create_noise("apgd_t", eps=0.1, steps=2)(x, y, two_class)
    with pytest.raises(TypeError, match="int64"):
        create_noise("apgd_ce", eps=0.1)(x, y.int(), tiny_model)


def test_zero_eps_is_identity(tiny_model):
    x = torch.rand(2, 3, 8, 8)
    adv = create_noise("autoattack_linf", eps=0.0)(x, torch.zeros(2, dtype=torch.long), tiny_model)
    assert torch.equal(adv, x)


# --- projections --------------------------------------------------------------------------------------------


def _lp_reference(t, w, b, norm):
    """The minimal-norm box-constrained hyperplane point by scipy's LP/QP solvers."""
    from scipy.optimize import linprog, minimize

    dim = len(t)
    need = b - w @ t
    bounds = [(-t[i], 1 - t[i]) for i in range(dim)]
    if norm == "linf":
        a_ub = []
        for i in range(dim):
            for s in (1, -1):
                row = np.zeros(dim + 1)
                row[i], row[-1] = s, -1
                a_ub.append(row)
        res = linprog(
            np.r_[np.zeros(dim), 1], A_ub=a_ub, b_ub=np.zeros(2 * dim), A_eq=[np.r_[w, 0]], b_eq=[need],
            bounds=bounds + [(0, None)],
        )  # fmt: skip
        return res.fun if res.success else None
    if norm == "l1":
        pos = [(0, 1 - t[i]) for i in range(dim)]
        neg = [(0, t[i]) for i in range(dim)]
        res = linprog(np.ones(2 * dim), A_eq=[np.r_[w, -w]], b_eq=[need], bounds=pos + neg)
        return res.fun if res.success else None
    res = minimize(
        lambda z: (z**2).sum(), np.zeros(dim), method="SLSQP", bounds=bounds,
        constraints=[{"type": "eq", "fun": lambda z: w @ z - need}], options={"ftol": 1e-14, "maxiter": 500},
    )  # fmt: skip
    return math.sqrt(res.fun) if res.success else None


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_hyperplane_projection_matches_lp(norm):
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(15):
        t = torch.rand(1, 6, generator=gen, dtype=torch.float64)
        w = torch.randn(1, 6, generator=gen, dtype=torch.float64)
        b = (w * t).sum(1) + 0.5 * torch.randn(1, generator=gen, dtype=torch.float64)
        d = project_hyperplane_box(t, w, b, norm)[0].numpy()
        tn, wn, bn = t[0].numpy(), w[0].numpy(), float(b)
        assert (tn + d >= -1e-12).all() and (tn + d <= 1 + 1e-12).all()
        opt = _lp_reference(tn, wn, bn, norm)
        if opt is None:  # the box does not reach the hyperplane
            continue
        assert abs(wn @ (tn + d) - bn) < 1e-8
        mine = {"linf": np.abs(d).max(), "l2": np.sqrt((d**2).sum()), "l1": np.abs(d).sum()}[norm]
        assert mine == pytest.approx(opt, abs=1e-6)
        checked += 1
    assert checked >= 5


def test_l1_box_projection_is_the_projection():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 40, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 40, generator=gen, dtype=torch.float64)
    eps = 2.0
    p = project_l1_box(x, y, eps)
    assert (lp_norm(p, "l1") <= eps + 1e-9).all()
    assert ((x + p) >= -1e-12).all() and ((x + p) <= 1 + 1e-12).all()
    # Variational inequality of a projection onto a convex set: (y - p) . (z - p) <= 0 for every feasible z.
    for _ in range(50):
        z = project_l1_box(x, torch.randn(4, 40, generator=gen, dtype=torch.float64) * 0.3, eps)
        assert (((y - p) * (z - p)).sum(1) <= 1e-7).all()
    # Away from the box it is the plain l1-ball projection.
    small = 0.01 * y
    x_mid = torch.full_like(x, 0.5)
    assert torch.allclose(project_l1_box(x_mid, small, 0.05), project_l1_ball(small, 0.05), atol=1e-9)
    inside = 1e-4 * y
    assert torch.equal(project_l1_box(x_mid, inside, eps), inside)


def test_l1_step_is_sparse_and_skips_the_box():
    grad = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    adv = torch.rand(2, 3, 8, 8)
    adv[:, 0] = 1.0  # channel 0 saturated at 1
    step = steepest_step(grad, "l1", 2.0, l1_sparsity=0.9, adv=adv)
    assert torch.allclose(lp_norm(step, "l1"), torch.full((2,), 2.0))
    assert ((step != 0).flatten(1).sum(1) <= round(0.1 * 192)).all()
    assert not (step[:, 0] > 0).any(), "no l1 mass may be spent pushing saturated pixels further out"


def test_losses():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5]])
    y = torch.tensor([0, 0])
    d = dlr_loss(logits, y)
    assert d[0] == pytest.approx(-(3 - 1) / (3 - 0))
    assert d[1] == pytest.approx(-(0 - 2) / (2 - 0.5))
    t = dlr_targeted_loss(logits, y, torch.tensor([2, 1]))
    assert t[0] == pytest.approx(-(3 - 0) / (3 - 0.5 * (0 + -1)))
    # DLR is invariant to shifting and scaling the logits.
    assert torch.allclose(dlr_loss(5 * logits + 2, y), d, atol=1e-6)


def test_budget_scaling():
    assert scale_budget(8 / 255, "linf", (3, 32, 32)) == 8 / 255
    assert scale_budget(2.0, "l2", (3, 224, 224)) == pytest.approx(2.0)
    assert scale_budget(1600, "l1", (3, 32, 32)) == pytest.approx(1600 * 3072 / 150528)
    assert scale_budget(0.5, "l2", (1, 28, 28)) == pytest.approx(0.5 * math.sqrt(784 / 150528))
    assert robustart_budgets("l1") == ROBUSTART_BUDGETS["l1"]
    with pytest.raises(ValueError, match="unknown norm"):
        scale_budget(1.0, "l0", (3, 32, 32))
