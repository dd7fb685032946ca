import pytest
import torch

from robustvision.noises import create_noise, list_noises
from robustvision.noises.adversarial import PGD, lp_norm, project_l1_ball

BUDGETS = {"fgsm": 8 / 255, "pgd_linf": 8 / 255, "pgd_l2": 0.5, "pgd_l1": 8.0, "mim_linf": 8 / 255}


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 4),
    )
    net.train()
    return net


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_attack_contract(name, tiny_model):
    x = torch.rand(6, 3, 8, 8)
    y = torch.arange(6) % 4
    attack = create_noise(name, eps=BUDGETS[name], **({} if name == "fgsm" else {"steps": 5}))
    adv = attack(x, y, tiny_model, generator=torch.Generator().manual_seed(1))
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert (lp_norm(adv - x, attack.norm) <= BUDGETS[name] * (1 + 1e-4) + 1e-6).all()
    assert tiny_model.training, "the model's mode must be restored"
    assert all(p.requires_grad for p in tiny_model.parameters())
    again = attack(x, y, tiny_model, generator=torch.Generator().manual_seed(1))
    assert torch.equal(adv, again)
    with torch.no_grad():
        tiny_model.eval()
        clean = (tiny_model(x).argmax(1) == y).float().mean()
        robust = (tiny_model(adv).argmax(1) == y).float().mean()
        tiny_model.train()
    assert robust <= clean


def test_attack_errors(tiny_model):
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="needs a model"):
        create_noise("pgd_linf", eps=0.1)(x, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds"):
        create_noise("pgd_linf", eps=3.0)
    with pytest.raises(ValueError, match="unknown norm"):
        PGD(tiny_model, eps=1, norm="l3")
    with pytest.raises(ValueError, match="NaN"):
        create_noise("fgsm", eps=0.1)(x * float("nan"), torch.zeros(2, dtype=torch.long), tiny_model)
    assert set(list_noises(kind="adversarial")) >= set(BUDGETS)


def test_l1_projection_is_exact():
    torch.manual_seed(0)
    d = torch.randn(5, 3, 4, 4) * 3
    p = project_l1_ball(d, 2.0)
    assert torch.allclose(lp_norm(p, "l1"), torch.full((5,), 2.0), atol=1e-4)
    inside = torch.randn(1, 3, 4, 4) * 1e-3
    assert torch.equal(project_l1_ball(inside, 2.0), inside)
