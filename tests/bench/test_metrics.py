"""Metric formulas on hand-made per-sample arrays (RobustART AR/WCAR, Hendrycks mCE/relative mCE, FP, NSD)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robustvision.bench import metrics as M


def test_every_metric_name_says_its_direction():
    for name, info in M.METRICS.items():
        assert info.higher_is_better != name.endswith("_lower_better"), name
        assert info.formula


def test_accuracy_and_ar_differ_by_conditioning_on_clean_correct():
    clean = np.array([1, 1, 1, 1, 0, 0], bool)
    adv = np.array([1, 0, 0, 1, 1, 0], bool)  # sample 4 is wrong clean but right under attack
    assert M.accuracy(adv) == pytest.approx(3 / 6)
    assert M.adversarial_robustness(clean, adv) == pytest.approx(2 / 4)


def test_ar_nan_without_clean_correct_and_prefix_alignment():
    assert math.isnan(M.adversarial_robustness(np.zeros(4, bool), np.ones(4, bool)))
    clean = np.array([1, 1, 0, 1, 1, 1], bool)
    adv = np.array([1, 0, 1], bool)  # attack cell ran on a 3-sample prefix
    assert M.adversarial_robustness(clean, adv) == pytest.approx(1 / 2)


def test_wcar_requires_surviving_every_attack():
    clean = np.array([1, 1, 1, 1, 0], bool)
    a1 = np.array([1, 1, 0, 1, 1], bool)
    a2 = np.array([1, 0, 1, 1, 1], bool)
    assert M.worst_case_adversarial_robustness(clean, [a1, a2]) == pytest.approx(2 / 4)
    assert M.worst_case_adversarial_robustness(clean, [a1]) == pytest.approx(M.adversarial_robustness(clean, a1))
    assert math.isnan(M.worst_case_adversarial_robustness(clean, []))
    with pytest.raises(ValueError, match="1-D"):
        M.worst_case_adversarial_robustness(np.ones((2, 2)), [a1])


def test_mean_ce_mce_and_relative_mce():
    f = {("fog", 1): 0.2, ("fog", 3): 0.4, ("blur", 1): 0.1, ("blur", 3): 0.3}
    base = {("fog", 1): 0.4, ("fog", 3): 0.6, ("blur", 1): 0.2, ("blur", 3): 0.2}
    assert M.mean_corruption_error(f) == pytest.approx(np.mean([0.3, 0.2]))
    mce, per = M.mce(f, base)
    assert per == pytest.approx({"fog": 0.6 / 1.0, "blur": 0.4 / 0.4})
    assert mce == pytest.approx((0.6 + 1.0) / 2)
    rel, per_rel = M.relative_mce(f, 0.05, base, 0.1)
    assert per_rel["fog"] == pytest.approx((0.15 + 0.35) / (0.3 + 0.5))
    assert per_rel["blur"] == pytest.approx((0.05 + 0.25) / (0.1 + 0.1))
    assert rel == pytest.approx(np.mean(list(per_rel.values())))
    # The baseline itself scores exactly 1.
    assert M.mce(base, base)[0] == pytest.approx(1.0)


def test_mce_skips_corruptions_the_baseline_lacks_or_where_it_makes_no_error():
    f = {("fog", 1): 0.2, ("snow", 1): 0.5}
    base = {("fog", 1): 0.0}
    mce, per = M.mce(f, base)
    assert per == {} and math.isnan(mce)


def test_flip_probability_noise_vs_sequential_reference():
    preds = np.array([[0, 0], [1, 0], [0, 0], [0, 1]])  # T=4 frames, N=2 videos
    # noise: compare with frame 0 -> flips at (1,0), (3,1) = 2 of 6
    assert M.flip_probability(preds, noise=True) == pytest.approx(2 / 6)
    # sequential: (1,0) vs (0,0) flip; (2,0) vs (1,0) flip; (3,1) vs (2,1) flip -> 3 of 6
    assert M.flip_probability(preds, noise=False) == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match="T x N"):
        M.flip_probability(np.zeros(3), noise=True)


def test_system_spread_and_nsd():
    s = M.system_spread([0.9, 0.8, 0.7])
    assert s.mean == pytest.approx(0.8)
    assert s.std == pytest.approx(np.std([0.9, 0.8, 0.7]))
    assert s.nsd == pytest.approx(-s.std)
    assert s.settings == 3
    assert math.isnan(M.system_spread([]).mean)


def test_prediction_flip_rate():
    assert M.prediction_flip_rate(np.array([1, 2, 3, 4]), np.array([1, 0, 3, 0])) == pytest.approx(0.5)
