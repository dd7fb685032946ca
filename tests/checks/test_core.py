"""Health checks: each verdict on a toy built to pass it and one built to fail it; pairing, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustvision.checks import CHECK_ORDER, CHECKS, CheckConfig, MaskedLogits, list_checks, run
from robustvision.registry import UnknownNameError

from .toys import EPS0, bump, dead_zone, easy, linear_far, toy_data


def masked_easy():
    return MaskedLogits(easy(), mode="temperature")


# A reference PGD too short to converge (2 steps of RobustART's 0.075 eps travel 0.15 eps): the far target of
# ``linear_far`` is then reached only by more steps or a larger step.
SHORT = {"steps": 2, "rel_stepsize": 0.075}

# (check, toy that fails it, config overrides, surrogate builder). Every check passes on ``easy``.
FAILS = [
    ("gradients", dead_zone, {}, None),
    ("unbounded", dead_zone, {}, None),
    ("eps_monotone", bump, {}, None),
    ("more_steps", linear_far, SHORT, None),
    ("restarts", dead_zone, {}, None),
    ("larger_step", linear_far, SHORT, None),
    ("apgd_dlr", masked_easy, {}, None),
    ("square", masked_easy, {}, None),
    ("transfer", masked_easy, {}, easy),
]


def test_every_registered_check_has_a_failing_toy():
    assert {f[0] for f in FAILS} == set(CHECK_ORDER) == set(CHECKS)


@pytest.mark.parametrize("name, _toy, overrides, surrogate", FAILS, ids=[f[0] for f in FAILS])
def test_check_passes_on_a_model_built_to_pass(name, _toy, overrides, surrogate):
    report = run(easy(), toy_data(), checks=[name], surrogate=easy())
    res = report.get(name)
    assert res.verdict == "pass", res.message


@pytest.mark.parametrize("name, toy, overrides, surrogate", FAILS, ids=[f[0] for f in FAILS])
def test_check_warns_on_a_model_built_to_fail(name, toy, overrides, surrogate):
    report = run(toy(), toy_data(), checks=[name], config=CheckConfig(**overrides), surrogate=surrogate and surrogate())
    res = report.get(name)
    assert res.verdict == "warn", res.message
    assert report.failed == [name] and not report.healthy


def test_the_reference_pgd_follows_madrys_step_rule():
    config = CheckConfig()
    assert config.reference_rel_stepsize == pytest.approx(2.5 / 20)  # 0.125 eps per step, 2.5 eps in all
    assert CheckConfig(steps=10).reference_rel_stepsize == pytest.approx(0.25)
    assert CheckConfig(rel_stepsize=0.075).reference_rel_stepsize == 0.075
    assert config.larger_rel_stepsize == pytest.approx(0.25)  # eps/4, twice the reference step
    assert CheckConfig(steps=5).larger_rel_stepsize == pytest.approx(1.0)  # always larger than the reference
    report = run(easy(), toy_data(), checks=["more_steps"])
    assert report.reference_attack == "PGD-20 (step 0.125 eps, one random start)"
    assert report.get("more_steps").attack == "PGD-100 (step 0.125 eps)"


def test_a_converged_unmasked_model_is_not_flagged_while_the_default_gap_shows():
    # ``linear_far`` breaks only past 0.9 eps. A bench-style default PGD-10 of RobustART's 0.075 eps travels 0.75 eps,
    # so it breaks only the points whose random start lies above 0.15 eps (P = 0.5 x 0.85); the reference PGD-20 of
    # 0.125 eps travels 2.5 eps and breaks every point, and no stronger attack finds more: healthy, with a gap.
    report = run(linear_far(), toy_data(), config=CheckConfig(default_steps=10), surrogate=easy())
    assert report.healthy, [r.message for r in report.results if r.verdict == "warn"]
    assert [r.name for r in report.results] == list(CHECK_ORDER)
    assert report.pgd_accuracy == 0.0 and report.worst_case_accuracy == 0.0
    assert 0.4 <= report.default_accuracy <= 0.75
    assert report.default_gap == pytest.approx(report.default_accuracy)
    assert report.default_attack == "PGD-10 (step 0.075 eps)"
    line = report.default_gap_message()
    assert (
        line.startswith(f"default attack gap {100 * report.default_gap:.1f} points") and "not a health warning" in line
    )
    # The default PGD ran from the reference's random starts: every point it broke, the reference broke too.
    assert not (~report.default_correct & report.pgd_correct).any()
    # RobustART's own PGD-20 (1.5 eps of travel) reaches the far target too: no gap, and no "overstates" remark.
    plain = run(linear_far(), toy_data(), checks=["gradients"])
    assert plain.default_accuracy == 0.0 and plain.default_gap == 0.0
    assert "overstates" not in plain.default_gap_message()
    # Not measured (as inside ``bench``, which stores its own PGD): no figure, no line.
    none = run(linear_far(), toy_data(), checks=["gradients"], config=CheckConfig(default_steps=0))
    assert none.default_accuracy is None and none.default_gap is None and none.default_gap_message() == ""


def test_the_masked_toy_is_still_flagged_against_the_tuned_reference():
    # The same far target behind a temperature head: PGD's gradient vanishes, so the reference stays at its start,
    # while eps = 1, Square, APGD-DLR and transfer from the unmasked model see through.
    report = run(
        MaskedLogits(linear_far(), mode="temperature"),
        toy_data(),
        config=CheckConfig(default_steps=10),
        surrogate=linear_far(),
    )
    assert {"gradients", "unbounded", "apgd_dlr", "square", "transfer"} <= set(report.failed), report.failed
    assert report.pgd_accuracy > 0.9 and report.worst_case_accuracy < 0.1
    assert report.default_gap > 0.8


def test_stronger_attack_figures_are_paired_and_measured_as_designed():
    # Dead zone: PGD gets through only from a start above 0.8 eps (P = 0.1); 5 more restarts give 1 - 0.9^6 = 0.47;
    # more steps from the same start change nothing, so more_steps passes on exactly the same points.
    report = run(dead_zone(), toy_data(), checks=["more_steps", "restarts"])
    more, restarts = report.get("more_steps"), report.get("restarts")
    assert more.verdict == "pass" and more.numbers["drop"] == 0.0
    assert 0.8 <= report.pgd_accuracy <= 0.97
    assert 0.3 <= restarts.numbers["drop"] <= 0.55
    # The stronger attack ran on PGD's survivors: its combined correctness never exceeds PGD's.
    assert not (restarts.correct & ~report.pgd_correct).any()
    assert restarts.numbers["robust_accuracy"] == pytest.approx(restarts.correct.mean())


def test_eps_monotone_reports_the_curve_and_the_rise():
    res = run(bump(), toy_data(), checks=["eps_monotone"]).get("eps_monotone")
    assert res.numbers["accuracy@0"] == 1.0
    assert res.numbers[f"accuracy@{EPS0:.6g}"] == 0.0  # the bump is reachable at the budget under test
    assert res.numbers[f"accuracy@{2 * EPS0:.6g}"] > 0.1  # ... and missed from starts beyond it
    assert res.numbers["largest_rise"] > 0.5


def test_transfer_is_skipped_without_a_surrogate():
    res = run(masked_easy(), toy_data(), checks=["transfer"]).get("transfer")
    assert res.verdict == "skip" and res.ok


def test_apgd_dlr_is_skipped_with_two_classes():
    class TwoClass(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            v = x[:, 0, 0, 0] * self.w
            return torch.stack([torch.ones_like(v), v], dim=1)

    assert run(TwoClass(), toy_data(), checks=["apgd_dlr"]).get("apgd_dlr").verdict == "skip"


def test_runs_are_deterministic_and_restore_the_model():
    model = masked_easy()
    model.train()
    a = run(model, toy_data(), checks=list_checks(cheap=True))
    b = run(model, toy_data(), checks=list_checks(cheap=True))
    assert model.training
    assert [r.verdict for r in a.results] == [r.verdict for r in b.results]
    assert [r.numbers for r in a.results] == [r.numbers for r in b.results]
    assert np.array_equal(a.worst_case_correct(), b.worst_case_correct())
    # Another seed draws other random starts.
    c = run(model, toy_data(), checks=["unbounded"], config=CheckConfig(seed=1))
    assert c.get("unbounded").numbers != a.get("unbounded").numbers


def test_worst_case_is_the_and_of_every_attack_at_the_budget():
    report = run(dead_zone(), toy_data(), checks=["restarts", "square"])
    expected = report.pgd_correct & report.get("restarts").correct & report.get("square").correct
    assert np.array_equal(report.worst_case_correct(), expected)
    assert report.worst_case_correct().mean() <= report.pgd_accuracy


def test_cheap_subset_and_order():
    assert list_checks(cheap=True) == ["gradients", "unbounded", "eps_monotone", "apgd_dlr", "square"]
    report = run(easy(), toy_data(), checks=["square", "gradients"])
    assert [r.name for r in report.results] == ["gradients", "square"]  # run order, not request order
    rows = report.to_rows()
    assert rows[0]["check"] == "gradients" and rows[0]["verdict"] == "pass"


def test_masked_logits_keep_predictions():
    x = torch.rand(8, 1, 4, 4)
    base = easy()
    for mode in ("temperature", "relu"):
        assert torch.equal(MaskedLogits(base, mode=mode)(x).argmax(1), base(x).argmax(1))
    with pytest.raises(ValueError, match="unknown mask mode"):
        MaskedLogits(base, mode="softmax")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": 0}, "eps must lie in"),
        ({"eps": 1.5}, "eps must lie in"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"tolerance": 1.5}, "tolerance must lie in"),
        ({"eps_grid": ()}, "eps_grid"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(easy(), toy_data(), checks=["gradients"], config=CheckConfig(**kwargs))


def test_bad_names_and_data_are_clear_errors():
    with pytest.raises(UnknownNameError, match="did you mean 'square'"):
        run(easy(), toy_data(), checks=["squares"])
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        run(easy(), (torch.full((4, 1, 4, 4), 2.0), torch.zeros(4, dtype=torch.int64)))
    with pytest.raises(TypeError, match="images, labels"):
        run(easy(), "digits")


def test_a_trained_lenet_passes_and_its_masked_copy_fails(digits_lenet):
    from robustvision.checks import CHEAP_SETTINGS
    from robustvision.data import create_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = digits_lenet("standard", 0)
        x, y = create_dataset("digits", split="test").tensors()
        config = CheckConfig(n_examples=48, **CHEAP_SETTINGS)
        names = ["gradients", "unbounded", "square"]
        plain = run(model, (x, y), checks=names, config=config)
        masked = run(MaskedLogits(model), (x, y), checks=names, config=config)
    finally:
        torch.set_num_threads(threads)
    assert plain.healthy, [r.message for r in plain.results]
    assert {"gradients", "unbounded"} <= set(masked.failed), [r.message for r in masked.results]
    assert masked.pgd_accuracy >= plain.pgd_accuracy  # the masked copy looks more robust to PGD
