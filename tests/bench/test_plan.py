"""Bench config, presets, budget scaling, noise selectors and cell planning."""

from __future__ import annotations

import math

import pytest

from robustvision.bench.plan import (
    PRESETS,
    ROBUSTART_BUDGETS_224,
    BenchConfig,
    ModelEntry,
    default_budgets,
    load_config,
    plan_cells,
    preset_config,
    scale_budget,
)
from robustvision.registry import UnknownNameError
from robustvision.runtime import seed_from_key

MODELS = [
    ModelEntry("lenet5", "standard", "cnn", "/x/a.safetensors", "h1"),
    ModelEntry("lenet5", "pgd_at", "cnn", "/x/b.safetensors", "h2"),
]


def plan(cfg, models=MODELS, size=32):
    return plan_cells(cfg, models, image_size=size, channels=3, test_size=450)


def test_scale_budget_rule():
    # At 224 x 224 x 3 the budgets are RobustART's exactly.
    for norm, budgets in ROBUSTART_BUDGETS_224.items():
        assert default_budgets(norm, 224) == pytest.approx(budgets)
    ratio = 3 * 32 * 32 / (3 * 224 * 224)
    assert scale_budget(8 / 255, "linf", 32) == pytest.approx(8 / 255)
    assert scale_budget(8.0, "l2", 32) == pytest.approx(8.0 * math.sqrt(ratio))
    assert scale_budget(1600.0, "l1", 32) == pytest.approx(1600.0 * ratio)
    assert scale_budget(1600.0, "l1", 32) == pytest.approx(32.653, abs=1e-3)
    # A perturbation of the same per-pixel size keeps its relation to the scaled budget.
    delta = 0.01
    for norm, p in (("l2", 2), ("l1", 1)):
        n224 = (3 * 224 * 224) ** (1 / p) * delta
        n32 = (3 * 32 * 32) ** (1 / p) * delta
        assert scale_budget(n224, norm, 32) == pytest.approx(n32)
    with pytest.raises(ValueError, match="unknown norm"):
        scale_budget(1.0, "l0", 32)


def test_presets_load_and_validate():
    for p in PRESETS:
        cfg = load_config(p)
        assert cfg.preset == p and cfg.noises
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("huge")


def test_yaml_then_cli_overrides(tmp_path):
    y = tmp_path / "b.yaml"
    y.write_text("n_examples: 99\nnoises: [fgsm]\nseverities: [2, 4]\n")
    cfg = load_config("quick", y, n_examples=10, noises=None)
    assert cfg.n_examples == 10 and cfg.noises == ["fgsm"] and cfg.severities == [2, 4]
    y.write_text("n_exampels: 3\n")
    with pytest.raises(ValueError, match="did you mean 'n_examples'"):
        load_config("quick", y)
    with pytest.raises(ValueError, match="severity must be an integer from 1 to 5"):
        load_config("quick", severities=[6])
    with pytest.raises(ValueError, match="executor"):
        load_config("quick", executor="slurm")


def test_default_cells_clean_fgsm_pgd_three_budgets():
    cfg = load_config("quick", noises=["fgsm", "pgd_linf"])
    p = plan(cfg)
    clean = [c for c in p.cells if c.noise == "clean"]
    assert len(clean) == 2
    for attack in ("fgsm", "pgd_linf"):
        eps = sorted({c.severity for c in p.cells if c.noise == attack})
        assert eps == pytest.approx([0.5 / 255, 2 / 255, 8 / 255])
        assert {c.level for c in p.cells if c.noise == attack} == {1, 2, 3}
    assert len(p.cells) == 2 * (1 + 3 + 3)
    assert len({(c.key, c.config_hash) for c in p.cells}) == len(p.cells)


def test_l2_l1_budgets_scaled_in_cells():
    p = plan(load_config("quick", noises=["pgd_l2", "pgd_l1"]))
    l2 = sorted({c.severity for c in p.cells if c.noise == "pgd_l2"})
    assert l2 == pytest.approx(list(default_budgets("l2", 32)))
    assert max(c.severity for c in p.cells if c.noise == "pgd_l1") == pytest.approx(
        1600 * 3 * 32 * 32 / (3 * 224 * 224)
    )


def test_seeds_come_from_cell_keys():
    p = plan(load_config("quick", noises=["pgd_linf"], seed=7))
    again = plan(load_config("quick", noises=["pgd_linf"], seed=7))
    assert [c.seed for c in p.cells] == [c.seed for c in again.cells]
    assert [c.config_hash for c in p.cells] == [c.config_hash for c in again.cells]
    adv = [c for c in p.cells if c.kind == "adversarial" and c.level == 3]
    assert adv[0].seed != adv[1].seed  # attacks are seeded per model
    assert adv[0].seed == seed_from_key(7, "digits", "lenet5/standard", "pgd_linf", adv[0].severity)
    other = plan(load_config("quick", noises=["pgd_linf"], seed=8))
    assert {c.seed for c in other.cells}.isdisjoint({c.seed for c in p.cells})


def test_model_independent_noises_share_seed_across_models(test_noises):
    p = plan(load_config("quick", noises=["test_darken@2"]))
    dark = [c for c in p.cells if c.noise == "test_darken"]
    assert len(dark) == 2 and dark[0].seed == dark[1].seed and dark[0].model_independent
    assert dark[0].config_hash != dark[1].config_hash  # the model is part of the config


def test_config_hash_changes_with_what_changes_numbers():
    a = plan(load_config("quick", noises=["fgsm"], n_adversarial=32))
    b = plan(load_config("quick", noises=["fgsm"], n_adversarial=16))
    c = plan(load_config("quick", noises=["fgsm"], n_adversarial=32, device="cpu", store="elsewhere.db"))
    fg = lambda p: [x.config_hash for x in p.cells if x.noise == "fgsm"]  # noqa: E731
    assert fg(a) != fg(b)
    assert fg(a) == fg(c)  # device and store do not change the numbers' identity


def test_selectors_kinds_globs_and_values(test_noises):
    p = plan(load_config("quick", noises=["system", "test_dark*@1,5", "pgd_linf@8/255"]))
    names = {c.noise for c in p.cells}
    assert {"test_posterize3", "test_posterize5", "test_modelswap", "test_darken", "pgd_linf"} <= names
    assert sorted({c.severity for c in p.cells if c.noise == "test_darken"}) == [1.0, 5.0]
    assert [c.severity for c in p.cells if c.noise == "pgd_linf"][0] == pytest.approx(8 / 255)


@pytest.mark.parametrize(
    "selector, message",
    [
        ("pgd_linf@2.0", "out of range"),
        ("pgd_linf@0", "out of range"),
        ("pgd_l2@100", "out of range"),
        ("test_darken@6", "severity must be an integer from 1 to 5"),
        ("test_posterize3@2", "single setting"),
        ("pgd_linf@abc", "not a number"),
    ],
)
def test_bad_selectors_are_clear_errors(test_noises, selector, message):
    with pytest.raises(ValueError, match=message):
        plan(load_config("quick", noises=[selector]))


def test_unknown_noise_suggests_close_names():
    with pytest.raises(UnknownNameError, match="pgd_linf"):
        plan(load_config("quick", noises=["pgd_lnf"]))


def test_preset_noises_missing_from_install_are_reported_not_fatal():
    from robustvision.noises import NOISES

    cfg = preset_config("quick")
    p = plan(cfg.validate())
    planned = {c.noise for c in p.cells}
    for name in cfg.noises:
        if name.startswith("imagenet_p"):
            continue
        if name in NOISES.list():
            assert name in planned
        else:
            assert any(repr(name) in s for s in p.skipped), name


def test_no_models_is_an_error():
    with pytest.raises(ValueError, match="no models"):
        plan(BenchConfig(noises=["fgsm"]).validate(), models=[])


def test_split_selectors_keeps_values_together():
    from robustvision.bench.plan import split_selectors

    assert split_selectors(["fgsm,pgd_linf@1/255,2/255,fog@1,5", "system"]) == [
        "fgsm",
        "pgd_linf@1/255,2/255",
        "fog@1,5",
        "system",
    ]
    assert load_config("quick", noises="fgsm,fog@1,3").noises == ["fgsm", "fog@1,3"]


def test_kind_selector_skips_noises_that_need_more_than_a_budget():
    from robustvision.noises.base import NOISES, Noise, NoiseKind

    class NeedsSource(Noise):
        name = "test_transferish"
        kind = NoiseKind.ADVERSARIAL

        def __init__(self, *, source, eps):
            super().__init__(eps)

    NOISES.add("test_transferish", NeedsSource, kind=NoiseKind.ADVERSARIAL, norm="linf")
    try:
        p = plan(load_config("quick", noises=["adversarial"]))
        assert "test_transferish" not in {c.noise for c in p.cells}
        assert any("test_transferish" in s and "cannot be built" in s for s in p.skipped)
        with pytest.raises(TypeError):
            plan(load_config("quick", noises=["test_transferish"]))
    finally:
        NOISES._builders.pop("test_transferish")
        NOISES._meta.pop("test_transferish")
