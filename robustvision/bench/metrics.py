"""Robustness metrics, each a small pure function with its formula (RobustART, arXiv:2109.05211; Hendrycks &
Dietterich, ICLR 2019).

Every metric's *name* says which way is better: plain names (``clean_accuracy``, ``robust_accuracy``, ``ar``,
``wcar``, ``nsd``, ...) read "higher is better"; names that end in ``_lower_better`` (``corruption_error``,
``mce``, ``flip_probability``, ``system_std``, ...) read "lower is better". :data:`METRICS` lists them all with
their direction and formula, and the report shows the direction beside each.

Notation: a model ``f``, ``n`` evaluation samples ``x_i`` with labels ``y_i``; ``c_i = 1[f(x_i) = y_i]`` is clean
correctness and ``a_i^k = 1[f(A_k(x_i)) = y_i]`` correctness under noise ``k``. All accuracies are fractions in
[0, 1] (the report prints percentages).

Defects of the reference code that are *not* ported (RobustART ``metrics/``, see the design note §1.8): its AR and
WCAR evaluators crash (``parse_line`` without ``self``) and hard-code 50,000 samples; its ImageNet-S evaluator keys
a dict by a list. Here each metric takes the per-sample arrays it needs and checks their shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MetricInfo:
    """One metric: its name, whether higher is better, its formula and a short label for tables."""

    name: str
    higher_is_better: bool
    formula: str
    label: str


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("clean_accuracy", True, "mean_i c_i", "clean acc"),
        MetricInfo("accuracy", True, "mean_i 1[f(noise(x_i)) = y_i] (one cell)", "acc"),
        MetricInfo("robust_accuracy", True, "mean_i a_i (adversarial cell)", "robust acc"),
        MetricInfo("ar", True, "sum_i c_i a_i / sum_i c_i (RobustART AR: clean-correct samples that survive)", "AR"),
        MetricInfo("wcar", True, "sum_i c_i prod_k a_i^k / sum_i c_i (survive every attack)", "WCAR"),
        MetricInfo(
            "pgd_robust_accuracy",
            True,
            "mean_i a_i^PGD: PGD-linf (RobustART settings) at the largest linf budget, on the health checks' images",
            "PGD acc",
        ),
        MetricInfo(
            "worst_robust_accuracy",
            True,
            "mean_i prod_k a_i^k over every linf attack at that budget (bench attacks and health checks), same images",
            "worst acc",
        ),
        MetricInfo(
            "default_attack_gap_lower_better",
            False,
            "PGD acc - worst acc: how much the default PGD overstates robust accuracy (info, not a health warning)",
            "PGD gap",
        ),
        MetricInfo("corruption_error_lower_better", False, "E_{c,s} = 1 - acc_{c,s}", "CE"),
        MetricInfo("mean_ce_lower_better", False, "mean_{c,s} E_{c,s} (RobustART, unnormalised)", "mean CE"),
        MetricInfo(
            "mce_lower_better",
            False,
            "mean_c sum_s E^f_{c,s} / sum_s E^base_{c,s} (Hendrycks; base = AlexNet's published errors or a model)",
            "mCE",
        ),
        MetricInfo(
            "relative_mce_lower_better",
            False,
            "mean_c sum_s (E^f_{c,s} - E^f_clean) / sum_s (E^base_{c,s} - E^base_clean) (Hendrycks)",
            "rel. mCE",
        ),
        MetricInfo("corruption_accuracy", True, "mean_{c,s} acc_{c,s}", "corr. acc"),
        MetricInfo(
            "flip_probability_lower_better",
            False,
            "mean_{videos} mean_j 1[f(x_j) != f(x_ref(j))] (Hendrycks FP; ref = frame 0 for noise, j-1 otherwise)",
            "FP",
        ),
        MetricInfo("system_mean_accuracy", True, "mean_s acc_s over system-noise settings s", "sys mean"),
        MetricInfo("system_std_lower_better", False, "std_s acc_s (population std over settings)", "sys std"),
        MetricInfo("nsd", True, "-std_s acc_s (RobustART's negative standard deviation)", "NSD"),
        MetricInfo(
            "system_flip_lower_better",
            False,
            "mean_s mean_i 1[f(S_s(x_i)) != f(x_i)] (predictions changed by a setting)",
            "sys flip",
        ),
    )
}


# AlexNet's ImageNet-C top-1 error per corruption and severity 1-5, the normaliser of Hendrycks' mCE (Hendrycks &
# Dietterich, ICLR 2019, arXiv:1903.12261; measured with the torchvision AlexNet by hendrycks/robustness
# ImageNet-C/test.py, which prints these per-severity errors). Their per-corruption means are the "raw AlexNet
# errors taken from https://github.com/hendrycks/robustness" that AugMix (google-research/augmix, imagenet.py,
# ALEXNET_ERR) and RobustBench normalise by: 0.886428 (gaussian_noise) ... 0.606500 (jpeg_compression). The paper
# publishes no AlexNet errors for the four "extra" corruptions (speckle_noise, gaussian_blur, spatter, saturate), so
# AlexNet-normalised mCE covers the 15 main corruptions.
ALEXNET_ERRORS: dict[str, tuple[float, float, float, float, float]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.9487, 0.9872, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.5843, 0.70048, 0.82108, 0.8975, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.9187, 0.94952),
    "frost": (0.6139, 0.79734, 0.8879, 0.89942, 0.9343),
    "fog": (0.67474, 0.7605, 0.84378, 0.8726, 0.945),
    "brightness": (0.4514, 0.48502, 0.54048, 0.62166, 0.7244),
    "contrast": (0.64548, 0.7615, 0.88874, 0.9776, 0.9927),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.5462, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}
# AlexNet's clean ImageNet top-1 error (torchvision's alexnet weights, the ones hendrycks/robustness evaluates:
# acc@1 56.522 in torchvision's model documentation), for relative mCE.
ALEXNET_CLEAN_ERROR = 1.0 - 0.56522
ALEXNET = "alexnet"


def alexnet_errors() -> dict[tuple[str, float], float]:
    """:data:`ALEXNET_ERRORS` as ``{(corruption, severity): error}``, the form :func:`mce` takes."""
    return {(c, float(s)): e for c, errs in ALEXNET_ERRORS.items() for s, e in enumerate(errs, start=1)}


def _as_bool(a: Sequence[bool] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-sample correctness, got shape {arr.shape}")
    return arr.astype(bool)


def _same_length(*arrays: np.ndarray) -> int:
    n = min(len(a) for a in arrays)
    return n


def accuracy(correct: Sequence[bool] | np.ndarray) -> float:
    """Top-1 accuracy ``mean_i c_i`` of a per-sample correctness vector (``nan`` when empty)."""
    c = _as_bool(correct, "correct")
    return float(c.mean()) if c.size else float("nan")


def adversarial_robustness(clean_correct: np.ndarray, adv_correct: np.ndarray) -> float:
    """RobustART's AR: the share of clean-correct samples that stay correct under the attack.

    ``AR = sum_i c_i a_i / sum_i c_i``. It is conditioned on clean-correct samples, so it is *not* robust accuracy
    (``mean_i a_i``). When the two vectors differ in length (an attack run on a prefix of the evaluation set),
    the common prefix is used. Returns ``nan`` when no sample is clean-correct.
    """
    c, a = _as_bool(clean_correct, "clean_correct"), _as_bool(adv_correct, "adv_correct")
    n = _same_length(c, a)
    c, a = c[:n], a[:n]
    denom = int(c.sum())
    return float((c & a).sum() / denom) if denom else float("nan")


def worst_case_adversarial_robustness(clean_correct: np.ndarray, adv_corrects: Sequence[np.ndarray]) -> float:
    """RobustART's WCAR: the share of clean-correct samples that survive *every* attack in ``adv_corrects``.

    ``WCAR = sum_i c_i prod_k a_i^k / sum_i c_i``; over the common prefix of all vectors. ``nan`` when no attack is
    given or no sample is clean-correct.
    """
    if not adv_corrects:
        return float("nan")
    c = _as_bool(clean_correct, "clean_correct")
    advs = [_as_bool(a, "adv_correct") for a in adv_corrects]
    n = _same_length(c, *advs)
    survive = c[:n].copy()
    for a in advs:
        survive &= a[:n]
    denom = int(c[:n].sum())
    return float(survive.sum() / denom) if denom else float("nan")


def corruption_error(acc: float) -> float:
    """Corruption error of one corruption and severity: ``E_{c,s} = 1 - acc_{c,s}`` (lower is better)."""
    return 1.0 - float(acc)


def mean_corruption_error(errors: Mapping[tuple[str, float], float]) -> float:
    """RobustART's unnormalised mean corruption error: ``mean_{c,s} E_{c,s}`` over every (corruption, severity).

    Averaged over severities per corruption first and then over corruptions, as Prototype's
    ``ImageNetCDataset.merge_eval_res`` does (equal to the flat mean when every corruption has the same severities).
    """
    by_c = _group(errors)
    if not by_c:
        return float("nan")
    return float(np.mean([np.mean(list(sev.values())) for sev in by_c.values()]))


def _group(errors: Mapping[tuple[str, float], float]) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = {}
    for (c, s), e in errors.items():
        out.setdefault(c, {})[float(s)] = float(e)
    return out


def mce(
    errors: Mapping[tuple[str, float], float], baseline_errors: Mapping[tuple[str, float], float]
) -> tuple[float, dict[str, float]]:
    """Hendrycks' normalised mCE against a baseline model (AlexNet on ImageNet; a named zoo model here).

    ``CE_c = sum_s E^f_{c,s} / sum_s E^base_{c,s}`` and ``mCE = mean_c CE_c``, over the (corruption, severity)
    pairs both models have. Returns ``(mCE, {corruption: CE_c})``; corruptions where the baseline's summed error is
    0 are left out (the ratio is undefined). Lower is better; 1.0 means "as fragile as the baseline".
    """
    f, b = _group(errors), _group(baseline_errors)
    per: dict[str, float] = {}
    for c, sev in f.items():
        common = [s for s in sev if s in b.get(c, {})]
        denom = sum(b[c][s] for s in common)
        if common and denom > 0:
            per[c] = sum(sev[s] for s in common) / denom
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def relative_mce(
    errors: Mapping[tuple[str, float], float],
    clean_error: float,
    baseline_errors: Mapping[tuple[str, float], float],
    baseline_clean_error: float,
) -> tuple[float, dict[str, float]]:
    """Hendrycks' relative mCE: how much a model degrades from clean, relative to how much the baseline does.

    ``relCE_c = sum_s (E^f_{c,s} - E^f_clean) / sum_s (E^base_{c,s} - E^base_clean)``, ``rel. mCE = mean_c
    relCE_c``. Corruptions where the baseline does not degrade (denominator <= 0) are left out. Lower is better.
    """
    f, b = _group(errors), _group(baseline_errors)
    per: dict[str, float] = {}
    for c, sev in f.items():
        common = [s for s in sev if s in b.get(c, {})]
        denom = sum(b[c][s] - baseline_clean_error for s in common)
        if common and denom > 0:
            per[c] = sum(sev[s] - clean_error for s in common) / denom
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def flip_probability(predictions: np.ndarray, *, noise: bool) -> float:
    """Hendrycks' flip probability of a ``T x N`` array of predicted labels (``T`` frames of ``N`` sequences).

    ``FP = 1/(N (T-1)) sum_i sum_{j=2..T} 1[f(x_{i,j}) != f(x_{i,ref(j)})]`` with ``ref(j) = 1`` for noise
    sequences (each frame against the clean first frame) and ``ref(j) = j - 1`` otherwise. Lower is better
    (RobustART stores ``-FP``).
    """
    p = np.asarray(predictions)
    if p.ndim != 2 or p.shape[0] < 2:
        raise ValueError(f"predictions must be T x N with T >= 2 frames, got shape {p.shape}")
    ref = np.broadcast_to(p[:1], (p.shape[0] - 1, p.shape[1])) if noise else p[:-1]
    return float((p[1:] != ref).mean())


def prediction_flip_rate(reference: np.ndarray, predictions: np.ndarray) -> float:
    """Share of samples whose prediction differs from the reference predictions (e.g. clean vs a system setting)."""
    r, p = np.asarray(reference), np.asarray(predictions)
    n = min(len(r), len(p))
    return float((r[:n] != p[:n]).mean()) if n else float("nan")


@dataclass(frozen=True)
class SystemSpread:
    """Accuracy spread over system-noise settings: mean, population std and RobustART's NSD = -std."""

    mean: float
    std: float
    nsd: float
    settings: int


def system_spread(accuracies: Sequence[float]) -> SystemSpread:
    """Mean, std and NSD of a model's accuracy over system-noise settings (decoders x resizes x ...).

    ``mean = mean_s acc_s``, ``std = sqrt(mean_s (acc_s - mean)^2)`` (population std: the settings are the whole
    set, not a sample), ``NSD = -std`` (RobustART: negated so higher is better). The newest RobustART code writes
    instead ``-var`` of per-sample 0/1 correctness pooled over settings; we report the paper's NSD.
    """
    a = np.asarray(list(accuracies), dtype=float)
    if a.size == 0:
        return SystemSpread(float("nan"), float("nan"), float("nan"), 0)
    std = float(a.std())
    return SystemSpread(float(a.mean()), std, -std, int(a.size))
