"""Metrics computed from the results store: per-cell tables and the leaderboard.

Everything here reads only from :class:`~robustvision.bench.store.ResultsStore`. When a cell was stored several
times with different configs (say, a quick run and a default run), the most recent one is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from robustvision.bench import metrics as M
from robustvision.bench.selectors import CellKind, flip_scored_rows, scored_by_flip
from robustvision.bench.store import BENCHMARK, ResultsStore

CELL_KEY = ["dataset", "model", "technique", "noise", "severity"]
PRIMARY = {
    "clean": "clean_accuracy",
    "adversarial": "robust_accuracy",
    "natural": "accuracy",
    "system": "accuracy",
    "physical": "accuracy",
}


@dataclass
class Summary:
    """The store's contents as tables.

    Attributes:
        cells: one row per cell (latest config): identity, family, level, ``n``, ``accuracy`` (or flip
            probability for ImageNet-P), ``ar`` for adversarial cells, ``flip_vs_clean`` for system cells.
        leaderboard: one row per (dataset, model, technique) with the aggregate metrics of :mod:`metrics`, the
            ``health`` of the checks (``ok``, ``warn: <checks>``, ``-``) and the PGD / worst-case robust accuracy.
        checks: the health-check cells (kind ``check``), kept out of ``cells``.
        baseline: the ``model/technique`` that normalises mCE (``None`` without natural cells).
    """

    cells: pd.DataFrame
    leaderboard: pd.DataFrame
    baseline: str | None
    checks: pd.DataFrame = field(default_factory=pd.DataFrame)


def _latest_cells(store: ResultsStore, run_id: str | None, dataset: str | None) -> pd.DataFrame:
    cells = store.cells(run_id=run_id, dataset=dataset)
    if cells.empty:
        return cells
    cells = cells.sort_values(["created_at", "id"]).drop_duplicates(CELL_KEY, keep="last")
    res = store.results(run_id=run_id, dataset=dataset, capability=BENCHMARK)
    res = res.sort_values("created_at").drop_duplicates([*CELL_KEY, "metric", "config_hash"], keep="last")
    wide = res.pivot_table(index=[*CELL_KEY, "config_hash"], columns="metric", values="value", aggfunc="last")
    wide = wide.reset_index()
    out = cells.merge(wide, on=[*CELL_KEY, "config_hash"], how="left")

    def primary(row: pd.Series) -> float:
        if scored_by_flip(row["noise"]):
            return row.get("flip_probability_lower_better", np.nan)
        return row.get(PRIMARY.get(row["kind"], "accuracy"), np.nan)

    out["accuracy"] = out.apply(primary, axis=1) if len(out) else []
    return out.reset_index(drop=True)


def _derive_sample_metrics(store: ResultsStore, cells: pd.DataFrame) -> pd.DataFrame:
    """Add ``ar`` (adversarial cells) and ``flip_vs_clean`` (system cells) from the per-sample side table."""
    cells = cells.copy()
    cells["ar"] = np.nan
    cells["flip_vs_clean"] = np.nan
    samples = store.samples(cells["id"].tolist())
    for _, group in cells.groupby(["dataset", "model", "technique"]):
        clean = group[group["kind"] == CellKind.CLEAN]
        if clean.empty or int(clean.iloc[0]["id"]) not in samples:
            continue
        c_correct, c_pred = samples[int(clean.iloc[0]["id"])]
        for idx, row in group.iterrows():
            s = samples.get(int(row["id"]))
            if s is None:
                continue
            if row["kind"] == CellKind.ADVERSARIAL:
                cells.at[idx, "ar"] = M.adversarial_robustness(c_correct, s[0])
            elif row["kind"] == CellKind.SYSTEM:
                cells.at[idx, "flip_vs_clean"] = M.prediction_flip_rate(c_pred, s[1])
    return cells


def _wcar(store: ResultsStore, group: pd.DataFrame, samples: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    clean = group[group["kind"] == CellKind.CLEAN]
    adv = group[group["kind"] == CellKind.ADVERSARIAL]
    if clean.empty or adv.empty:
        return out
    c = samples.get(int(clean.iloc[0]["id"]))
    if c is None:
        return out
    advs = [samples[int(i)][0] for i in adv["id"] if int(i) in samples]
    out["wcar"] = M.worst_case_adversarial_robustness(c[0], advs)
    for lv in sorted(set(adv["level"]) - {0}):
        ids = adv[adv["level"] == lv]["id"]
        out[f"wcar_level{int(lv)}"] = M.worst_case_adversarial_robustness(
            c[0], [samples[int(i)][0] for i in ids if int(i) in samples]
        )
    return out


def pick_baseline(cells: pd.DataFrame, baseline: str | None) -> str | None:
    """The mCE baseline as ``model/technique``: the one asked for, else the first ``standard`` model by name.

    Hendrycks normalises by AlexNet; ``alexnet`` selects AlexNet's published ImageNet-C errors
    (:data:`~robustvision.bench.metrics.ALEXNET_ERRORS`, for ImageNet data). A small benchmark on other data has no
    AlexNet, so a named zoo model plays its part and the report says which.
    """
    nat = cells[cells["kind"] == CellKind.NATURAL]
    if nat.empty:
        return None
    if baseline == M.ALEXNET:
        return M.ALEXNET
    keys = sorted({f"{m}/{t}" for m, t in zip(nat["model"], nat["technique"], strict=True)})
    if baseline:
        wanted = baseline if "/" in baseline else f"{baseline}/standard"
        if wanted not in keys:
            raise ValueError(f"mCE baseline {baseline!r} has no natural-noise cells in the store (have: {keys})")
        return wanted
    standard = [k for k in keys if k.endswith("/standard")]
    return (standard or keys)[0]


def summarize(
    store: ResultsStore, *, run_id: str | None = None, dataset: str | None = None, baseline: str | None = None
) -> Summary:
    """Compute every metric of :mod:`robustvision.bench.metrics` from the store."""
    cells = _latest_cells(store, run_id, dataset)
    if cells.empty:
        return Summary(cells, pd.DataFrame(), None)
    from robustvision.bench.health import CHECK_KIND, add_health

    checks = cells[cells["kind"] == CHECK_KIND].reset_index(drop=True)
    cells = cells[cells["kind"] != CHECK_KIND].reset_index(drop=True)
    if cells.empty:
        return Summary(cells, pd.DataFrame(), None, checks)
    cells = _derive_sample_metrics(store, cells)
    base = pick_baseline(cells, baseline)
    samples = store.samples(cells[cells["kind"].isin(["clean", "adversarial"])]["id"].tolist())

    def errors(group: pd.DataFrame) -> dict[tuple[str, float], float]:
        nat = group[(group["kind"] == CellKind.NATURAL) & ~flip_scored_rows(group["noise"])]
        return {(r.noise, float(r.severity)): 1.0 - float(r.accuracy) for r in nat.itertuples()}

    # The baseline's errors per data set (mCE compares models on the same data only).
    base_errors: dict[str, tuple[dict[tuple[str, float], float], float]] = {}
    rows = []
    groups = list(cells.groupby(["dataset", "model", "technique"], sort=True))
    for (ds, model, tech), group in groups:
        if base == M.ALEXNET:
            base_errors[ds] = (M.alexnet_errors(), M.ALEXNET_CLEAN_ERROR)
        elif base and f"{model}/{tech}" == base:
            clean = group[group["kind"] == CellKind.CLEAN]
            clean_err = 1.0 - float(clean["accuracy"].iloc[0]) if not clean.empty else float("nan")
            base_errors[ds] = (errors(group), clean_err)
    for (ds, model, tech), group in groups:
        row: dict[str, object] = {"dataset": ds, "model": model, "technique": tech}
        row["family"] = next((f for f in group["family"] if f), "")
        clean = group[group["kind"] == CellKind.CLEAN]
        clean_acc = float(clean["accuracy"].iloc[0]) if not clean.empty else float("nan")
        row["clean_accuracy"] = clean_acc
        adv = group[group["kind"] == CellKind.ADVERSARIAL]
        row["robust_accuracy"] = float(adv["accuracy"].mean()) if not adv.empty else np.nan
        row["ar"] = float(adv["ar"].mean()) if not adv.empty else np.nan
        row.update(_wcar(store, group, samples))
        errs = errors(group)
        if errs:
            row["corruption_accuracy"] = float(np.mean([1 - e for e in errs.values()]))
            row["mean_ce_lower_better"] = M.mean_corruption_error(errs)
            if ds in base_errors:
                b_errs, b_clean = base_errors[ds]
                row["mce_lower_better"] = M.mce(errs, b_errs)[0]
                row["relative_mce_lower_better"] = M.relative_mce(errs, 1 - clean_acc, b_errs, b_clean)[0]
        pseq = group[flip_scored_rows(group["noise"])]
        if not pseq.empty:
            row["flip_probability_lower_better"] = float(pseq["accuracy"].mean())
        sysn = group[group["kind"] == CellKind.SYSTEM]
        if not sysn.empty:
            spread = M.system_spread(sysn["accuracy"].tolist())
            row["system_mean_accuracy"] = spread.mean
            row["system_std_lower_better"] = spread.std
            row["nsd"] = spread.nsd
            row["system_flip_lower_better"] = float(sysn["flip_vs_clean"].mean())
        rows.append(row)
    board = add_health(store, pd.DataFrame(rows), cells, checks)
    return Summary(cells, board, base, checks)


def kind_means(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy per (model, technique, family, kind), ImageNet-P excluded (it is a flip rate)."""
    acc = cells[~flip_scored_rows(cells["noise"])]
    return (
        acc.groupby(["dataset", "model", "technique", "family", "kind"], as_index=False)["accuracy"]
        .mean()
        .rename(columns={"accuracy": "mean_accuracy"})
    )


def family_comparison(cells: pd.DataFrame) -> pd.DataFrame:
    """RobustART's architecture comparison: mean accuracy per family and noise kind (standard technique only
    when present, so training techniques do not blur the architecture effect)."""
    km = kind_means(cells)
    std = km[km["technique"] == "standard"]
    km = std if not std.empty else km
    return km.groupby(["family", "kind"], as_index=False)["mean_accuracy"].mean()


def technique_deltas(cells: pd.DataFrame) -> pd.DataFrame:
    """RobustART's technique ablation: each technique's mean accuracy per noise kind minus the same
    architecture's ``standard`` model's, averaged over architectures that have both."""
    km = kind_means(cells)
    base = km[km["technique"] == "standard"][["dataset", "model", "kind", "mean_accuracy"]]
    other = km[km["technique"] != "standard"]
    if base.empty or other.empty:
        return pd.DataFrame(columns=["technique", "kind", "delta", "models"])
    merged = other.merge(base, on=["dataset", "model", "kind"], suffixes=("", "_standard"))
    merged["delta"] = merged["mean_accuracy"] - merged["mean_accuracy_standard"]
    return merged.groupby(["technique", "kind"], as_index=False).agg(
        delta=("delta", "mean"), models=("model", "nunique")
    )
