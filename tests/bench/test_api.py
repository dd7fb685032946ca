"""``robustvision.evaluate``: the same cells and numbers as ``bench``, any module, clear errors."""

from __future__ import annotations

import pytest
import torch

import robustvision
from robustvision.bench.plan import load_config
from robustvision.bench.runner import run_bench
from robustvision.bench.sources import entries_from_paths
from robustvision.bench.store import ResultsStore
from robustvision.models.checkpoints import load_checkpoint

NOISES = ["fgsm", "pgd_linf@8/255", "gaussian_noise@3", "quantize_8bit", "precision_int8"]


@pytest.fixture(scope="module")
def lenet(bench_checkpoints):
    return bench_checkpoints / "lenet5_standard.safetensors"


def test_top_level_export():
    from robustvision.bench.api import evaluate

    assert robustvision.evaluate is evaluate


def test_evaluate_matches_bench_on_the_same_cells(lenet, tmp_path):
    kw = dict(n_examples=40, n_adversarial=16, attack_steps=2, batch_size=16, seed=3)
    cfg = load_config(
        "quick",
        checkpoints=[str(lenet)],
        store=str(tmp_path / "b.db"),
        noises=NOISES,
        out="",
        threads=1,
        checks=False,
        **kw,
    )
    with ResultsStore(cfg.store) as store:
        run_bench(cfg, entries_from_paths([lenet]), store)
        stored = store.results()
        cells = store.cells()
    bench = {
        (r.noise, round(r.severity, 6)): r.value
        for r in stored.itertuples()
        if r.metric in ("clean_accuracy", "accuracy", "robust_accuracy")
    }
    model, _ = load_checkpoint(lenet)
    table = robustvision.evaluate(model, "digits", noises=NOISES, name="lenet5", **kw)
    got = {(r.noise, round(r.severity, 6)): r.accuracy_any for r in table.itertuples()}
    assert set(got) == set(bench) and len(got) == 8  # clean, fgsm at 3 budgets, pgd, 3 others
    assert got == pytest.approx(bench, abs=1e-9)
    assert set(table["cell_key"]) == set(cells["cell_key"])  # the same cells, keyed the same way
    assert set(table["seed"]) == set(cells["seed"])  # drawn with the same seeds
    assert not model.training


def test_mean_std_wraps_a_model_that_wants_normalised_inputs(lenet):
    model, _ = load_checkpoint(lenet)
    inner = model.net  # sees normalised inputs
    mean, std = model.mean.flatten().tolist(), model.std.flatten().tolist()
    kw = dict(noises=["gaussian_noise@2"], n_examples=32)
    a = robustvision.evaluate(model, "digits", **kw)
    b = robustvision.evaluate(inner, "digits", mean=mean, std=std, **kw)
    assert a["accuracy_any"].tolist() == b["accuracy_any"].tolist()


def test_tensor_pair_and_store(tmp_path):
    torch.manual_seed(0)
    images, labels = torch.rand(12, 3, 16, 16), torch.randint(0, 4, (12,))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    with torch.no_grad():
        expected = float((net(images).argmax(1) == labels).float().mean())
    table = robustvision.evaluate(net, (images, labels), noises=["fgsm@8/255"], store=tmp_path / "s.db")
    clean = table[table["noise"] == "clean"].iloc[0]
    assert clean["clean_accuracy"] == pytest.approx(expected) and clean["n"] == 12
    assert table[table["noise"] == "fgsm"].iloc[0]["robust_accuracy"] <= expected
    with ResultsStore(tmp_path / "s.db") as rs:
        cells = rs.cells()
    assert sorted(cells["noise"]) == ["clean", "fgsm"] and set(cells["model"]) == {"Sequential"}


@pytest.mark.parametrize(
    ("net", "match"),
    [
        (torch.nn.Sequential(torch.nn.Flatten(0)), "N x num_classes logits"),  # one flat vector per batch
        (torch.nn.Identity(), "N x num_classes logits"),  # images back, 4-D
        (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 2)), "labels go up to class"),  # 2 logits
    ],
)
def test_wrong_output_shape_is_one_clear_error(net, match):
    images, labels = torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 1, 0])
    with pytest.raises(ValueError, match=match):
        robustvision.evaluate(net, (images, labels), noises=[])


def test_bad_data_argument():
    with pytest.raises(TypeError, match="data set name"):
        robustvision.evaluate(torch.nn.Identity(), 42)
    with pytest.raises(ValueError, match="one label per image"):
        robustvision.evaluate(torch.nn.Identity(), (torch.rand(3, 3, 8, 8), torch.zeros(2)))
