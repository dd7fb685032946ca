"""Training and evaluation attacks of the multi-perturbation defenses stay inside their balls and the box."""

from __future__ import annotations

import pytest
import torch

from robustvision.defenses.attacks import msd_perturb
from robustvision.defenses.gbn import route_domain
from robustvision.defenses.multi_perturbation import AttackSettings, StepContext, pgd_examples
from robustvision.noises import create_noise
from robustvision.noises.adversarial import l1_topk_direction, lp_norm
from robustvision.noises.l1_topk import lp_pgd

BUDGETS = {"l1": 10.0, "l2": 2.0, "linf": 0.3}
TOL = {"l1": 1e-3, "l2": 1e-5, "linf": 1e-6}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g)
    x[:, :, :4] = 0.0  # pixels on the box bound, as on MNIST
    x[:, :, -4:] = 1.0
    return x, torch.randint(0, 10, (6,), generator=g)


@pytest.fixture(scope="module")
def model(gbn_lenet):
    return gbn_lenet()


def _inside(adv, x, norm, eps):
    assert adv.min() >= 0 and adv.max() <= 1
    assert (lp_norm(adv - x, norm) <= eps + TOL[norm] * max(1.0, eps)).all()


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_lp_pgd_stays_in_ball_and_box(model, batch, norm):
    x, y = batch
    start = torch.randn_like(x) * 5  # far outside: the first projection must bring it back
    adv = lp_pgd(model, x, y, norm=norm, eps=BUDGETS[norm], steps=5, start=start, generator=torch.Generator())
    _inside(adv, x, norm, BUDGETS[norm])
    assert not torch.equal(adv, x)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_branch_attacks_of_gbn_training_stay_in_ball(model, batch, norm):
    x, y = batch
    ctx = StepContext(budgets=BUDGETS, attack=AttackSettings(steps=4), generator=torch.Generator().manual_seed(1))
    with route_domain(model, norm):
        adv = pgd_examples(model, x, y, norm, ctx)
    _inside(adv, x, norm, BUDGETS[norm])
    assert model.net.bn1.route is None


def test_msd_stays_in_the_union_of_balls(model, batch):
    x, y = batch
    adv = msd_perturb(model, x, y, budgets=BUDGETS, steps=6, generator=torch.Generator().manual_seed(0))
    assert adv.min() >= 0 and adv.max() <= 1
    inside_any = torch.zeros(len(x), dtype=torch.bool)
    for norm, eps in BUDGETS.items():
        inside_any |= lp_norm(adv - x, norm) <= eps + TOL[norm] * max(1.0, eps)
    assert inside_any.all()
    # MSD returns its highest-loss point, never worse than the clean image.
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy
        assert (ce(model(adv), y, reduction="none") >= ce(model(x), y, reduction="none") - 1e-6).all()


@pytest.mark.parametrize("restarts", [0, 2])
def test_registered_topk_l1_attack_stays_in_ball(model, batch, restarts):
    x, y = batch
    attack = create_noise("pgd_l1_topk", eps=10.0, steps=5, restarts=restarts)
    adv = attack(x, y, model=model, generator=torch.Generator().manual_seed(0))
    _inside(adv, x, "l1", 10.0)
    assert model.training is False


def test_l1_direction_skips_coordinates_pushed_out_of_the_box():
    adv = torch.tensor([[0.0, 1.0, 0.5, 0.02]])
    grad = torch.tensor([[-5.0, 4.0, 0.1, -3.0]])  # the three large ones push outward at a bound
    d = l1_topk_direction(grad, adv, k=1, gap=0.05)
    assert torch.equal(d, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))


def test_unknown_norm_is_rejected(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="unknown norm 'l3'"):
        lp_pgd(model, x, y, norm="l3", eps=1.0, steps=1)
    with pytest.raises(ValueError, match="unknown norm 'l0'"):
        msd_perturb(model, x, y, budgets={"l0": 1.0}, steps=1)
