"""The report's sections for the capabilities other than the benchmark: one table and one plot each.

Every section reads the capability's latest rows (:func:`~robustvision.bench.capabilities.latest_results`) and
returns a :class:`Section`; :mod:`robustvision.bench.report` turns it into HTML. A capability without rows in the
store has no section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from robustvision.bench.selectors import CellKind


@dataclass
class Section:
    """One capability's part of the report.

    Attributes:
        table: the figures, one row per evaluated variant; ``text`` names its label columns and ``percent`` the
            columns that hold fractions shown in %.
        figure: a matplotlib figure (``None``: nothing to plot).
        note: what the table and plot show, and how they were measured.
    """

    table: pd.DataFrame
    text: list[str]
    figure: object | None
    note: str
    percent: set[str] = field(default_factory=set)


def _wide(rows: pd.DataFrame, index: list[str], columns: str, metric: str) -> pd.DataFrame:
    sub = rows[rows["metric"] == metric]
    if sub.empty:
        return pd.DataFrame(columns=index)
    return sub.pivot_table(index=index, columns=columns, values="value", aggfunc="last").reset_index()


def _bars(ax, labels: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(labels)) + i * width - 0.4 + width / 2, values, width, label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    if len(series) > 1 or any(series):
        ax.legend(fontsize=7)


# --------------------------------------------------------------------------------------------------------- defend
def defend_section(rows: pd.DataFrame) -> Section:
    """The report section of GBN and baseline defences: per-norm and union accuracy per checkpoint."""
    import matplotlib.pyplot as plt

    rows = rows.assign(variant=rows["model"] + " (" + rows["technique"] + ")")
    acc = rows[rows["metric"] == "accuracy"]
    norms = [c for c in ("l1", "l2", "linf") if c in set(acc["noise"])]
    norms += sorted(set(acc["noise"]) - {"clean", "union", *norms})
    order = [c for c in ("clean", *norms, "union") if c in set(acc["noise"])]
    table = _wide(rows, ["dataset", "variant"], "noise", "accuracy")
    table = table[["dataset", "variant", *order]]
    n = rows.groupby(["dataset", "variant"])["n"].max().rename("n").reset_index()
    table = table.merge(n, on=["dataset", "variant"], how="left")
    table["n"] = table["n"].astype(int)
    for metric, label in (("e2e_accuracy", "union e2e only"), ("perfect_routing_accuracy", "union perfect routing")):
        extra = rows[(rows["metric"] == metric) & (rows["noise"] == "union")]
        if not extra.empty:
            table = table.merge(
                extra[["dataset", "variant", "value"]].rename(columns={"value": label}),
                on=["dataset", "variant"],
                how="left",
            )
    variants = table["dataset"] + "/" + table["variant"]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.3 * len(order) + 2.5), 3.8))
    _bars(ax, order, {v: list(100 * table.loc[i, order].astype(float)) for i, v in variants.items()}, "accuracy %")
    ax.set_ylim(0, 102)
    ax.set_title("Clean, per-norm and union robust accuracy per defended checkpoint")
    budgets = acc[acc["kind"] == CellKind.ADVERSARIAL].groupby("noise")["severity"].max()
    eps = ", ".join(f"{k} {v:g}" for k, v in budgets.items() if k != "union")
    note = (
        "Accuracy on the first n held-out images under the attack list of `robustvision defend evaluate` "
        f"(budgets: {eps}). A norm's accuracy counts the images that survive every attack of that norm (GBN: the "
        "end-to-end, branch-assignment and gate-steering attacks); union: those that survive every attack of every "
        "norm. e2e only: the end-to-end attacks alone; perfect routing: each norm attacked and judged on its own "
        "branch (the GBN routing diagnosis)."
    )
    percent = {*order, "union e2e only", "union perfect routing"}
    return Section(table, ["dataset", "variant"], fig, note, percent)


# ------------------------------------------------------------------------------------------------------------ das
def das_section(rows: pd.DataFrame) -> Section:
    """The report section of DAS camouflage: car accuracy by model and texture."""
    import matplotlib.pyplot as plt

    rows = rows.rename(columns={"technique": "texture", "noise": "views"})
    index = ["dataset", "views", "texture"]
    table = _wide(rows, index, "model", "car_accuracy")
    models = [c for c in table.columns if c not in index]
    for metric, model, col in (("ap50", "detector", "detector AP50"), ("naturalness", "texture", "naturalness")):
        extra = rows[(rows["metric"] == metric) & (rows["model"] == model)]
        if not extra.empty:
            table = table.merge(extra[[*index, "value"]].rename(columns={"value": col}), on=index, how="left")
    rank = {"original": 0, "seed": 1}
    table["_order"] = table["texture"].map(lambda v: (rank.get(v, 2), v))
    table = table.sort_values(["dataset", "views", "_order"]).drop(columns="_order").reset_index(drop=True)
    several = table[["dataset", "views"]].drop_duplicates().shape[0] > 1
    labels = list(table["dataset"] + " " + table["views"] + ": " + table["texture"] if several else table["texture"])
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 * len(labels) + 2.5), 3.8))
    _bars(ax, labels, {m: list(100 * table[m].astype(float)) for m in models}, "car accuracy %")
    ax.set_ylim(0, 102)
    ax.set_title("Car accuracy per target model under each texture (lower: stronger camouflage)")
    note = (
        "Car accuracy: the share of held-out rendered views (random pose, distance and background; the view set "
        "is named by its size and seed) that a target classifier still calls a car; original = the car's own "
        "paint, seed = the unoptimised seed pattern, other rows = textures from `robustvision das optimize` (named "
        "by their output folder). Detector AP50: average precision of the one-box car detector at IoU 0.5; "
        "naturalness: seed-pattern SSIM less any saliency gain."
    )
    return Section(table, index, fig, note, set(models))


# ----------------------------------------------------------------------------------------------------------- iseg
def iseg_section(rows: pd.DataFrame) -> Section:
    """The report section of interactive segmentation: NoC and IoU@k by predictor and data set."""
    import matplotlib.pyplot as plt

    rows = rows.assign(
        predictor=rows["model"] + np.where(rows["technique"] == "default", "", " (" + rows["technique"] + ")")
    )
    wide = rows.pivot_table(index=["dataset", "predictor"], columns="metric", values="value", aggfunc="last")
    wide = wide.reset_index()
    n = rows.groupby(["dataset", "predictor"])["n"].max().rename("instances").reset_index()
    wide = wide.merge(n, on=["dataset", "predictor"], how="left")
    nocs = sorted((c for c in wide.columns if c.startswith("noc@")), key=lambda c: int(c[4:]))
    over = sorted((c for c in wide.columns if c.startswith("over_max@")), key=lambda c: int(c[9:]))
    ious = sorted((c for c in wide.columns if c.startswith("iou@")), key=lambda c: int(c[4:]))
    cols = ["dataset", "predictor", "instances", *nocs, *over, *ious]
    cols += [c for c in ("click_ms_median",) if c in wide.columns]
    table = wide[cols].copy()
    for c in ("instances", *over):  # counts
        if table[c].notna().all():
            table[c] = table[c].round().astype(int)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = list(table["dataset"] + "/" + table["predictor"])
    _bars(left, nocs, {lab: list(table.loc[i, nocs].astype(float)) for i, lab in enumerate(labels)}, "mean clicks")
    left.set_title("NoC (lower is better)")
    for i, lab in enumerate(labels):
        ks = [int(c[4:]) for c in ious]
        right.plot(ks, 100 * table.loc[i, ious].astype(float).to_numpy(), marker="o", label=lab)
    right.set_xlabel("clicks k")
    right.set_ylabel("mean IoU %")
    right.set_ylim(0, 102)
    right.set_title("IoU after k clicks")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    note = (
        "NoC@85/90: mean number of clicks RITM's simulated user needs to reach 85 / 90 % IoU (capped at the "
        "click budget; over max: instances that never reach it); IoU@k: mean IoU after k clicks; click ms: median "
        "time of one prediction on the machine that ran `robustvision iseg evaluate`."
    )
    return Section(table, ["dataset", "predictor"], fig, note, set(ious))


# ---------------------------------------------------------------------------------------------------------- adapt
def adapt_section(rows: pd.DataFrame) -> Section:
    """The report section of domain adaptation: mIoU by method and seed."""
    import matplotlib.pyplot as plt

    keep = rows[rows["metric"].isin(["miou", "pixel_accuracy"])]
    index = ["dataset", "model", "technique", "seed"]
    table = keep.pivot_table(index=index, columns="metric", values="value", aggfunc="last").reset_index()
    n = rows.groupby(index)["n"].max().rename("images").reset_index()
    table = table.merge(n, on=index, how="left").rename(columns={"dataset": "target", "technique": "method"})
    table = table[[c for c in ("target", "model", "method", "seed", "images", "miou", "pixel_accuracy") if c in table]]
    table = table.rename(columns={"miou": "mIoU", "pixel_accuracy": "pixel acc"})
    groups = table.groupby(["target", "model", "method"], sort=True)["mIoU"]
    labels = [
        f"{m}\n{t}/{a}" if table["target"].nunique() > 1 or table["model"].nunique() > 1 else m
        for (t, a, m), _ in groups
    ]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels) + 2), 3.8))
    for i, (_, g) in enumerate(groups):
        ax.bar(i, 100 * g.mean(), 0.6, color="#4c72b0", alpha=0.6)
        ax.scatter(np.full(len(g), i), 100 * g.to_numpy(), color="#222", s=14, zorder=3)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("mIoU %")
    ax.set_title("mIoU per method (bar: mean over seeds; dots: one seed each)")
    ax.grid(alpha=0.3, axis="y")
    note = (
        "mIoU over the evaluated classes and pixel accuracy on the labelled target domain, one row per trained "
        "checkpoint (method and seed), from `robustvision adapt train` (its evaluation after training) or "
        "`robustvision adapt evaluate`."
    )
    return Section(table, ["target", "model", "method"], fig, note, {"mIoU", "pixel acc"})


SECTIONS: dict[str, Callable[[pd.DataFrame], Section]] = {
    "defend": defend_section,
    "das": das_section,
    "iseg": iseg_section,
    "adapt": adapt_section,
}
