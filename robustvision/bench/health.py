"""Health checks inside the benchmark: the cheap checks on every model, stored as cells, read back as a column.

Each benchmarked model gets one cell per cheap check (:data:`robustvision.checks.CHEAP_CHECKS`): kind ``check``,
noise ``check:<name>``, severity the l-inf budget under test (RobustART's largest, 8/255). A model's check cells run
as one unit (they share the clean pass and the default PGD), through the same function on every executor. A check
cell stores its verdict as numbers (``check_ok`` 1 or 0, or ``check_skipped`` 1, plus the check's own figures), its
message and the model card in the cell's params, and per-sample correctness under its attack (combined with the
default PGD) in the samples table, from which the worst-case robust accuracy is derived.

The checks compare with a well-tuned reference PGD (the bench's ``attack_steps`` steps of Madry et al.'s
``2.5 eps / steps``, one random start; see :mod:`robustvision.checks.core`), so a warning is about the model
(gradient masking), not about the bench's attack. How much the bench's own PGD-l-inf (``attack_steps`` steps of
RobustART's 0.075 eps) flatters a model is the leaderboard's default attack gap
(``default_attack_gap_lower_better``): its PGD figure minus the worst case over every l-inf attack at that budget
(:func:`worst_case`). The gap is derived from stored rows, so stores written before it (``health`` 1 in the
cells' hash payload) render with it too.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustvision.bench.plan import HASH_VERSION, BenchConfig, Cell, CellKind, ModelEntry, config_hash, default_budgets
from robustvision.bench.store import CellRecord, ResultsStore
from robustvision.checks import CHEAP_CHECKS, CHEAP_SETTINGS, CheckConfig
from robustvision.runtime import seed_from_key

CHECK_KIND = CellKind.CHECK.value
CHECK_PREFIX = "check:"
HEALTH_VERSION = 2  # bump when a check's procedure changes its stored verdicts (2: the Madry-tuned reference PGD)


def bench_check_config(cfg: BenchConfig, *, image_size: int, channels: int, n_adversarial: int) -> CheckConfig:
    """The checks' settings inside a bench: the largest RobustART l-inf budget, a reference PGD of the bench's step
    count (Madry's step), its batch, :data:`~robustvision.checks.CHEAP_SETTINGS`, on the first
    ``min(n_checks, n_adversarial)`` evaluation images. The default PGD is not rerun (``default_steps=0``): the
    bench's own ``pgd_linf`` cell is the default figure."""
    eps = default_budgets("linf", image_size, channels)[-1]
    return CheckConfig(
        eps=eps,
        steps=cfg.attack_steps,
        default_steps=0,
        n_examples=max(1, min(cfg.n_checks, n_adversarial)),
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        **CHEAP_SETTINGS,
    ).validate()


def plan_check_cells(
    cfg: BenchConfig, models: list[ModelEntry], *, image_size: int, channels: int, test_size: int
) -> list[Cell]:
    """One cell per (model, cheap check); empty when ``cfg.checks`` is off or ``n_checks`` is 0."""
    if not cfg.checks or cfg.n_checks == 0:
        return []
    n_all = min(cfg.n_examples or test_size, test_size)
    n_adv = min(cfg.n_adversarial or n_all, n_all)
    ccfg = bench_check_config(cfg, image_size=image_size, channels=channels, n_adversarial=n_adv)
    settings = dataclasses.asdict(ccfg)
    settings["eps_grid"] = list(settings["eps_grid"])
    kwargs = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in settings.items()))
    cells = []
    for m in models:
        seed = seed_from_key(cfg.seed, cfg.dataset, m.key, "checks")
        for name in CHEAP_CHECKS:
            noise = CHECK_PREFIX + name
            payload = {
                "v": HASH_VERSION,
                "health": HEALTH_VERSION,
                "dataset": cfg.dataset,
                "image_size": image_size,
                "data_seed": cfg.seed,
                "model": m.name,
                "technique": m.technique,
                "checkpoint": m.checkpoint_hash,
                "noise": noise,
                "kwargs": settings,
                "n": ccfg.n_examples,
                "seed": seed,
            }
            cells.append(
                Cell(
                    dataset=cfg.dataset,
                    model=m.name,
                    technique=m.technique,
                    family=m.family,
                    checkpoint=m.checkpoint,
                    noise=noise,
                    kind=CHECK_KIND,
                    severity=float(ccfg.eps),
                    level=0,
                    noise_kwargs=kwargs,
                    n=ccfg.n_examples,
                    seed=seed,
                    config_hash=config_hash(payload),
                    model_independent=False,
                )
            )
    return cells


def _card_of(checkpoint: str, blob: tuple[bytes, bytes] | None) -> dict[str, Any]:
    from robustvision.models.checkpoints import read_card

    try:
        return json.loads(blob[1]) if blob is not None else read_card(checkpoint)
    except (OSError, ValueError):
        return {}


def evaluate_check_unit(
    cells: tuple[Cell, ...],
    images: torch.Tensor,
    labels: torch.Tensor,
    model: torch.nn.Module,
    blob: tuple[bytes, bytes] | None = None,
) -> list[CellRecord]:
    """Run one model's check cells (one :func:`robustvision.checks.run`) and return one record per cell."""
    from robustvision import checks

    first = cells[0]
    kw = dict(first.noise_kwargs)
    ccfg = CheckConfig(**kw).replace(seed=int(first.seed))
    names = [c.noise[len(CHECK_PREFIX) :] for c in cells]
    n = ccfg.n_examples
    report = checks.run(model, (images[:n], labels[:n]), checks=names, config=ccfg)
    card = _card_of(first.checkpoint, blob)
    card_keep = {
        k: card[k] for k in ("arch", "technique", "dataset", "clean_accuracy", "epochs", "config") if k in card
    }
    card_keep.update({k: card[k] for k in ("model_kwargs", "zoo_preset", "train_seconds") if k in card})
    records = []
    for cell, name in zip(cells, names, strict=True):
        res = report.get(name)
        metrics: dict[str, float] = {k: float(v) for k, v in res.numbers.items() if math.isfinite(float(v))}
        if res.verdict == "skip":
            metrics["check_skipped"] = 1.0
        else:
            metrics["check_ok"] = 1.0 if res.verdict == "pass" else 0.0
        if name == names[0]:
            metrics["check_pgd_accuracy"] = report.pgd_accuracy
        params = {**kw, "verdict": res.verdict, "message": res.message, "attack": res.attack, "model_card": card_keep}
        records.append(
            CellRecord.from_cell(
                cell,
                n=n,
                metrics=metrics,
                params=params,
                correct=res.correct,
                predictions=None,
                seconds=res.seconds,
            )
        )
    return records


# --------------------------------------------------------------------------------------------------- reading
def check_table(checks: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, technique, check): verdict, message, attack, figures (from the cells' params)."""
    cols = ["dataset", "model", "technique", "check", "verdict", "message", "attack"]
    if checks.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for _, r in checks.iterrows():
        params = json.loads(r.get("params_json") or "{}")
        rows.append(
            {
                "dataset": r["dataset"],
                "model": r["model"],
                "technique": r["technique"],
                "check": str(r["noise"])[len(CHECK_PREFIX) :],
                "verdict": params.get("verdict", "skip"),
                "message": params.get("message", ""),
                "attack": params.get("attack", ""),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def health_label(table: pd.DataFrame) -> str:
    """``ok`` when every check passed, ``warn: a, b`` naming the checks that warned, ``-`` when none ran."""
    if table.empty:
        return "-"
    failed = table[table["verdict"] == "warn"]["check"].tolist()
    return "warn: " + ", ".join(failed) if failed else "ok"


def model_cards(checks: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The model card stored with each model's check cells, by (dataset, model, technique)."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for _, r in checks.iterrows():
        params = json.loads(r.get("params_json") or "{}")
        if params.get("model_card"):
            out[(r["dataset"], r["model"], r["technique"])] = params["model_card"]
    return out


def _linf_attack(noise: str) -> bool:
    from robustvision.bench.selectors import noise_norm

    try:
        return noise_norm(noise) == "linf"
    except KeyError:
        return False


def worst_case(
    store: ResultsStore, cells: pd.DataFrame, checks: pd.DataFrame
) -> dict[tuple[str, str, str], dict[str, float]]:
    """Per model: the PGD-l-inf robust accuracy at the checks' budget (RobustART's largest) beside the worst case
    over every l-inf attack run at that budget (bench attacks and the checks' attacks), both on the same images
    (the common prefix of the evaluation order), and their difference, the default attack gap.

    Returns:
        ``{(dataset, model, technique): {"pgd_robust_accuracy", "worst_robust_accuracy",
        "default_attack_gap_lower_better", "worst_n"}}``.
    """
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    adv = cells[cells["kind"] == CellKind.ADVERSARIAL] if not cells.empty else cells
    if adv.empty:
        return out
    for (ds, model, tech), group in adv.groupby(["dataset", "model", "technique"]):
        pgd = group[group["noise"] == "pgd_linf"]
        if pgd.empty:
            continue
        eps = float(pgd["severity"].max())
        same = group[group["noise"].map(_linf_attack) & np.isclose(group["severity"].astype(float), eps)]
        mine = checks
        if not checks.empty:
            mine = checks[
                (checks["dataset"] == ds)
                & (checks["model"] == model)
                & (checks["technique"] == tech)
                & np.isclose(checks["severity"].astype(float), eps)
            ]
        ids = [int(i) for i in same["id"]] + ([int(i) for i in mine["id"]] if not mine.empty else [])
        samples = store.samples(ids)
        pgd_id = int(pgd[np.isclose(pgd["severity"].astype(float), eps)]["id"].iloc[0])
        if pgd_id not in samples:
            continue
        arrays = [samples[i][0] for i in ids if i in samples and samples[i][0].size]
        n = min(len(a) for a in arrays)
        worst = np.ones(n, dtype=bool)
        for a in arrays:
            worst &= a[:n]
        pgd_acc = float(samples[pgd_id][0][:n].mean())
        out[(ds, model, tech)] = {
            "pgd_robust_accuracy": pgd_acc,
            "worst_robust_accuracy": float(worst.mean()),
            "default_attack_gap_lower_better": pgd_acc - float(worst.mean()),
            "worst_n": float(n),
        }
    return out


def add_health(store: ResultsStore, board: pd.DataFrame, cells: pd.DataFrame, checks: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with ``health`` and, where PGD-l-inf ran, ``pgd_robust_accuracy`` beside
    ``worst_robust_accuracy`` and their difference ``default_attack_gap_lower_better`` (see :func:`worst_case`)."""
    if board.empty:
        return board
    board = board.copy()
    table = check_table(checks)
    labels = []
    for _, row in board.iterrows():
        mine = table[
            (table["dataset"] == row["dataset"])
            & (table["model"] == row["model"])
            & (table["technique"] == row["technique"])
        ]
        labels.append(health_label(mine))
    board["health"] = labels
    worst = worst_case(store, cells, checks)
    for col in ("pgd_robust_accuracy", "worst_robust_accuracy", "default_attack_gap_lower_better"):
        board[col] = [
            worst.get((r["dataset"], r["model"], r["technique"]), {}).get(col, np.nan) for _, r in board.iterrows()
        ]
    return board
