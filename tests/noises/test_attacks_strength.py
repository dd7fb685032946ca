"""Attack strength on a tiny trained model: APGD vs PGD, AutoAttack vs its components, transfer vs white-box."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustvision.data import create_dataset
from robustvision.noises import create_noise
from robustvision.noises.adversarial import lp_norm
from robustvision.noises.autoattack import AutoAttack

EPS = 0.12


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained for a few seconds on 8 x 8 digits, and 32 test images.

    Trained on one thread: a different thread count sums gradients in another order, so the weights (and every
    threshold checked against them) would depend on OMP_NUM_THREADS.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_small_cnn()
    finally:
        torch.set_num_threads(threads)


def _train_small_cnn():
    torch.manual_seed(0)
    x, y = create_dataset("digits", "train", image_size=8).tensors()
    xt, yt = create_dataset("digits", "test", image_size=8).tensors()
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(6):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 128):
            b = perm[i : i + 128]
            loss = nn.functional.cross_entropy(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return net, xt[:32], yt[:32]


def acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_tiny_model_learned(trained):
    net, x, y = trained
    assert acc(net, x, y) >= 0.8


@pytest.mark.parametrize(("norm", "eps"), [("linf", EPS), ("l2", 0.6), ("l1", 3.0)])
def test_apgd_at_least_as_strong_as_pgd(trained, norm, eps):
    net, x, y = trained
    steps = 10
    pgd = create_noise(f"pgd_{norm}", eps=eps, steps=steps)(x, y, net, generator=gen())
    apgd = create_noise("apgd_ce" if norm == "linf" else f"apgd_{norm}", eps=eps, steps=steps)(
        x, y, net, generator=gen()
    )
    assert (lp_norm(apgd - x, norm) <= eps * (1 + 1e-4)).all()
    clean = acc(net, x, y)
    assert acc(net, apgd, y) <= acc(net, pgd, y)
    assert acc(net, apgd, y) < clean, "the budget must be large enough for the comparison to mean something"


def test_robust_accuracy_falls_with_eps(trained):
    net, x, y = trained
    accs = [acc(net, create_noise("apgd_ce", eps=e, steps=5)(x, y, net, generator=gen()), y) for e in (0.02, 0.06, 0.2)]
    assert accs[0] >= accs[1] >= accs[2]
    assert accs[2] < accs[0]


def test_autoattack_at_least_as_strong_as_each_component(trained):
    net, x, y = trained
    settings = {"apgd_steps": 5, "fab_steps": 5, "n_target_classes": 2, "square_queries": 50}
    aa = AutoAttack(net, eps=EPS, **settings)
    result = aa.run(x, y, generator=gen())
    assert (lp_norm(result.adv - x, "linf") <= EPS + 1e-6).all()
    steps = list(result.robust_accuracy.values())
    assert steps == sorted(steps, reverse=True), "each component only removes points"
    final = acc(net, result.adv, y)
    assert final == pytest.approx(steps[-1])
    assert final == pytest.approx(float(result.robust.float().mean()))
    singles = {
        "apgd_ce": create_noise("apgd_ce", eps=EPS, steps=5),
        "apgd_t": create_noise("apgd_t", eps=EPS, steps=5, n_target_classes=2),
        "fab_t": create_noise("fab_t", eps=EPS, steps=5, n_target_classes=2),
        "square": create_noise("square_linf", eps=EPS, n_queries=50),
    }
    for name, attack in singles.items():
        single = acc(net, attack(x, y, net, generator=gen()), y)
        assert final <= single, f"AutoAttack ({final}) weaker than {name} alone ({single})"
    # The noise call and run() agree.
    assert torch.equal(aa(x, y, generator=gen()), result.adv)


def test_fab_finds_small_perturbations(trained):
    net, x, y = trained
    adv = create_noise("fab_t", eps=EPS, steps=10, n_target_classes=2)(x, y, net, generator=gen())
    fooled = (net(adv).argmax(1) != y) & (net(x).argmax(1) == y)
    assert fooled.any()
    assert (lp_norm(adv - x, "linf")[fooled] <= EPS + 1e-6).all()


def test_cw_l2_finds_minimal_perturbations(trained):
    net, x, y = trained
    adv = create_noise("cw_l2", eps=2.0, steps=30, binary_search_steps=3, lr=0.05)(x, y, net, generator=gen())
    assert (lp_norm(adv - x, "l2") <= 2.0 + 1e-5).all()
    assert acc(net, adv, y) < acc(net, x, y)
    fooled = (net(adv).argmax(1) != y) & (net(x).argmax(1) == y)
    pgd = create_noise("pgd_l2", eps=2.0, steps=10)(x, y, net, generator=gen())
    # C&W minimises the norm: its successes are smaller than PGD's full-budget perturbations.
    assert lp_norm(adv - x, "l2")[fooled].mean() < lp_norm(pgd - x, "l2")[fooled].mean()


def test_square_is_black_box_but_works(trained):
    net, x, y = trained
    adv = create_noise("square_linf", eps=0.2, n_queries=100)(x, y, net, generator=gen())
    assert acc(net, adv, y) < acc(net, x, y)


@pytest.mark.parametrize("attack", ["pgd_linf", "apgd_ce", "mim_linf"])
def test_transfer_from_the_target_itself_is_white_box(trained, attack):
    net, x, y = trained
    kw = {"steps": 5}
    white = create_noise(attack, eps=EPS, **kw)(x, y, net, generator=gen(3))
    transfer = create_noise("transfer", source=net, attack=attack, eps=EPS, **kw)
    assert torch.equal(transfer(x, y, net, generator=gen(3)), white)
    assert transfer.params["attack"] == attack and transfer.kind.value == "adversarial"


def test_transfer_from_a_checkpoint(tmp_path):
    from robustvision.models import create_model
    from robustvision.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    source = create_model("lenet5", num_classes=10, image_size=16, in_chans=3).eval()
    path = save_checkpoint(source, tmp_path / "src.safetensors")
    target = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
    x = torch.rand(4, 3, 16, 16)
    y = torch.arange(4)
    noise = create_noise("transfer", source=str(path), attack="pgd_linf", eps=0.05, steps=3)
    adv = noise(x, y, target, generator=gen())
    expected = create_noise("pgd_linf", eps=0.05, steps=3)(x, y, source, generator=gen())
    assert torch.allclose(adv, expected, atol=1e-6)
    assert noise.params["source"] == str(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_noise("transfer", source=str(tmp_path / "missing.safetensors"), eps=0.1)
    with pytest.raises(ValueError, match="not be 'transfer'|cannot itself"):
        create_noise("transfer", source=source, attack="transfer", eps=0.1)


@pytest.mark.slow
def test_standard_autoattack_full_strength(trained):
    net, x, y = trained
    result = AutoAttack(net, eps=EPS).run(x, y, generator=gen())
    assert (lp_norm(result.adv - x, "linf") <= EPS + 1e-6).all()
    pgd = acc(net, create_noise("pgd_linf", eps=EPS)(x, y, net, generator=gen()), y)
    assert result.robust_accuracy["square"] <= pgd
    assert list(result.robust_accuracy) == ["clean", "apgd_ce", "apgd_t", "fab_t", "square"]
