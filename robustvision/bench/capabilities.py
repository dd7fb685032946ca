"""The result rows of every capability: what ``defend``, ``das``, ``iseg`` and ``adapt`` store, and how.

The benchmark writes cells (:meth:`~robustvision.bench.store.ResultsStore.write_cell`); the other capabilities write
plain rows through :meth:`~robustvision.bench.store.ResultsStore.write_results`, in the same ``results`` table and
columns, told apart by the ``capability`` column. Each capability fills the columns as follows:

* ``defend`` (``defend evaluate``): dataset = the data set, model = the checkpoint's name, technique = its
  training method, noise = the norm, ``union`` or ``clean``; metrics ``accuracy`` (the final figure: the adaptive
  worst case for GBN), ``e2e_accuracy``, ``perfect_routing_accuracy``, ``branch_alone:<branch>``,
  ``routing:<layer>:<branch>`` and ``gate_accuracy:<layer>`` (noise = the domain, kind ``gate``).
* ``das`` (``das optimize``, ``das evaluate``): dataset = ``das:<car>``, model = the target classifier, technique =
  the texture (``original``, ``seed``, or the attack's output folder name), noise = the held-out view set
  (``<n> views, seed <seed>``); metrics
  ``car_accuracy``, ``ap50`` (model ``detector``), ``seed_ssim``, ``saliency_ratio``, ``naturalness`` (model
  ``texture``).
* ``iseg`` (``iseg evaluate``): dataset = the data set, model = the predictor, technique = the checkpoint's name
  (``default``: the shipped weights), noise ``clicks``; metrics ``noc@85``, ``noc@90``, ``over_max@85``,
  ``over_max@90``, ``iou@1``, ``iou@3``, ``iou@5``, ``click_ms_median``.
* ``adapt`` (``adapt train``, ``adapt evaluate``): dataset = the labelled target domain, model = the architecture,
  technique = the method, noise ``target``, seed = the training seed; metrics ``miou``, ``pixel_accuracy``,
  ``iou:<class>``.

Accuracies, IoUs and mIoU are fractions; ``n`` is the number of evaluated images, views or instances; ``seed`` the
seed of the evaluation (attack seed, view seed) or of the training (adapt).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

BENCHMARK = "benchmark"


@dataclass(frozen=True)
class Capability:
    """One capability of the toolkit as the store and the report know it.

    Attributes:
        name: the value of the store's ``capability`` column.
        title: the report section's heading.
        command: the commands that write its rows.
    """

    name: str
    title: str
    command: str


CAPABILITIES: dict[str, Capability] = {
    c.name: c
    for c in (
        Capability(BENCHMARK, "Benchmark: robustness to adversarial, natural and system noise", "robustvision bench"),
        Capability("defend", "Defence: per-norm and union robust accuracy", "robustvision defend evaluate"),
        Capability(
            "das", "Physical attack (DAS): car accuracy by model and texture", "robustvision das optimize / evaluate"
        ),
        Capability("iseg", "Interactive segmentation: NoC and IoU@k", "robustvision iseg evaluate"),
        Capability("adapt", "Domain adaptation: mIoU by method and seed", "robustvision adapt train / evaluate"),
    )
}


def check_capability(name: str, *, writable: bool = False) -> Capability:
    """The capability called ``name``; ``ValueError`` with the close names otherwise.

    ``writable`` refuses ``benchmark``, whose rows only :meth:`ResultsStore.write_cell` writes (they come with cells).
    """
    if name not in CAPABILITIES or (writable and name == BENCHMARK):
        known = [c for c in CAPABILITIES if not (writable and c == BENCHMARK)]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown capability {name!r} (expected one of {', '.join(known)}){hint}")
    return CAPABILITIES[name]


@dataclass(frozen=True)
class Result:
    """One stored number of a capability (the columns are explained in the module docstring)."""

    dataset: str
    model: str
    technique: str
    metric: str
    value: float
    n: int
    seed: int = 0
    noise: str = ""
    kind: str = ""
    severity: float = 0.0


# --------------------------------------------------------------------------------------------------------- defend
def defend_rows(report: Mapping[str, Any], *, dataset: str, model: str, technique: str, seed: int) -> list[Result]:
    """The rows of one ``defend evaluate``: per-norm and union accuracy, and the GBN routing diagnosis if present.

    Args:
        report: :meth:`RobustnessReport.to_dict <robustvision.defenses.evaluate.RobustnessReport.to_dict>`.
        dataset: the data set.
        model: the checkpoint's name.
        technique: its training method.
        seed: the attack seed.
    """
    n, budgets = int(report["n"]), report["budgets"]

    def row(noise: str, metric: str, value: float, kind: str = "adversarial") -> Result:
        eps = float(budgets.get(noise, 0.0)) if kind == "adversarial" else 0.0
        return Result(dataset, model, technique, metric, float(value), n, seed, noise, kind, eps)

    rows = [row("clean", "accuracy", report["clean"], "clean")]
    rows += [row(norm, "accuracy", acc) for norm, acc in report["per_norm"].items()]
    rows.append(row("union", "accuracy", report["union"]))
    for norm, acc in (report.get("e2e_per_norm") or {}).items():
        rows.append(row(norm, "e2e_accuracy", acc))
    if report.get("e2e_union") is not None:
        rows.append(row("union", "e2e_accuracy", report["e2e_union"]))
    for norm, acc in (report.get("perfect_routing_per_norm") or {}).items():
        rows.append(row(norm, "perfect_routing_accuracy", acc))
    if report.get("perfect_routing_union") is not None:
        rows.append(row("union", "perfect_routing_accuracy", report["perfect_routing_union"]))
    for norm, accs in (report.get("branch_alone") or {}).items():
        rows += [row(norm, f"branch_alone:{branch}", acc) for branch, acc in accs.items()]
    for layer, accs in (report.get("gate_accuracy") or {}).items():
        rows += [row(domain, f"gate_accuracy:{layer}", acc, "gate") for domain, acc in accs.items()]
    for norm, layers in (report.get("routing") or {}).items():
        kind = "clean" if norm == "clean" else "adversarial"
        for layer, shares in layers.items():
            rows += [row(norm, f"routing:{layer}:{branch}", share, kind) for branch, share in shares.items()]
    return rows


# ------------------------------------------------------------------------------------------------------------ das
def das_rows(textures: Mapping[str, Mapping[str, float]], *, car: str, n: int, seed: int) -> list[Result]:
    """The rows of ``das optimize`` / ``das evaluate``: car accuracy of every model under every texture.

    Args:
        textures: texture label -> :func:`~robustvision.physical.evaluate.evaluate_texture`'s output
            (``acc/<model>``, ``det_ap50``, naturalness).
        car: the car mesh's name (the data set is ``das:<car>``).
        n: held-out views.
        seed: their seed.
    """
    rows = []
    for label, metrics in textures.items():
        for key, value in metrics.items():
            if key.startswith("acc/"):
                model, metric = key[4:], "car_accuracy"
            elif key == "det_ap50":
                model, metric = "detector", "ap50"
            else:
                model, metric = "texture", key
            views = f"{n} views, seed {seed}"
            rows.append(Result(f"das:{car}", model, label, metric, float(value), n, seed, views, "physical"))
    return rows


# ----------------------------------------------------------------------------------------------------------- iseg
def iseg_rows(summaries: Iterable[Any], *, dataset: str, technique: str) -> list[Result]:
    """The rows of ``iseg evaluate``: NoC, instances over the budget, IoU@k and click latency per predictor.

    Args:
        summaries: :class:`~robustvision.segmentation.interactive.evaluate.NocSummary` per predictor.
        dataset: the evaluation set.
        technique: the checkpoint's name (``default`` for the shipped weights).
    """
    rows = []
    for s in summaries:

        def row(metric: str, value: float, s=s) -> Result:
            return Result(dataset, s.predictor, technique, metric, float(value), int(s.n), 0, "clicks", "interactive")

        rows += [row(f"noc@{round(100 * t)}", v) for t, v in s.noc.items()]
        rows += [row(f"over_max@{round(100 * t)}", v) for t, v in s.over_max.items()]
        rows += [row(f"iou@{k}", v) for k, v in s.iou_at.items()]
        rows.append(row("click_ms_median", s.latency_median_ms))
    return rows


# ---------------------------------------------------------------------------------------------------------- adapt
def adapt_rows(metrics: Mapping[str, Any], *, target: str, arch: str, method: str, seed: int, n: int) -> list[Result]:
    """The rows of ``adapt train`` / ``adapt evaluate``: mIoU, pixel accuracy and per-class IoU.

    Args:
        metrics: :meth:`SegMetrics.as_dict <robustvision.segmentation.uda.evaluate.SegMetrics.as_dict>`.
        target: the labelled evaluation domain.
        arch: the trained model's architecture.
        method: its adaptation method.
        seed: its training seed.
        n: evaluated images.
    """

    def row(metric: str, value: float) -> Result:
        return Result(target, arch, method, metric, float(value), n, seed, "target", "domain")

    rows = [row("miou", metrics["miou"]), row("pixel_accuracy", metrics["pixel_accuracy"])]
    rows += [row(f"iou:{name}", v) for name, v in metrics.get("iou", {}).items()]
    return rows


# -------------------------------------------------------------------------------------------------- write / read
def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file (a checkpoint's, so a retrained model's rows are new rows, not skipped ones)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def store_results(store: str | None, capability: str, rows: Sequence[Result], config: Mapping[str, Any]) -> str:
    """Write ``rows`` of one run to the store (``None``: the default store); returns a line for the console."""
    from robustvision.bench.store import ResultsStore

    with ResultsStore(store) as rs:
        written = rs.write_results(capability, rows, config=dict(config))
        where = rs.display_url
    if written == 0:
        return f"results store {where}: these {capability} results were stored before (same config), kept"
    return f"results store {where}: {written} {capability} rows written"


RESULT_KEY = ["dataset", "model", "technique", "noise", "severity", "metric"]


def latest_results(
    store: Any, capability: str, *, run_id: str | None = None, dataset: str | None = None
) -> pd.DataFrame:
    """The capability's rows, the most recent per (dataset, model, technique, noise, severity, metric)."""
    df = store.results(run_id=run_id, dataset=dataset, capability=capability)
    if df.empty:
        return df
    return df.sort_values("created_at", kind="stable").drop_duplicates(RESULT_KEY, keep="last").reset_index(drop=True)


# ------------------------------------------------------------------------------------- one call per command
# Command-line parameters that decide where things are written or how fast, not what is measured.
NOT_CONFIG = frozenset({"store", "json_out", "out", "threads", "overlays", "workers"})


def command_settings(**extra: Any) -> dict[str, Any]:
    """The running command's parameters (those that decide the figures) plus ``extra``: the config of its rows."""
    import click

    ctx = click.get_current_context(silent=True)
    params = {k: v for k, v in (ctx.params if ctx else {}).items() if k not in NOT_CONFIG}
    return {"command": ctx.command_path if ctx else "", **params, **extra}


def store_defend(
    store: str | None, report: Mapping[str, Any], *, checkpoint: Path, card: Mapping[str, Any], dataset: str, seed: int
) -> str:
    """Store the rows of one ``defend evaluate`` (:func:`defend_rows`; the checkpoint's name is the model)."""
    technique = str(card.get("technique") or (card.get("defense") or {}).get("method") or "unknown")
    rows = defend_rows(report, dataset=dataset, model=Path(checkpoint).stem, technique=technique, seed=seed)
    return store_results(store, "defend", rows, command_settings(checkpoint_sha256=file_digest(checkpoint)))


def store_das(store: str | None, textures: Mapping[str, Mapping[str, float]], *, car: str, n: int, seed: int) -> str:
    """Store the rows of one ``das optimize`` or ``das evaluate`` (:func:`das_rows`)."""
    return store_results(store, "das", das_rows(textures, car=car, n=n, seed=seed), command_settings())


def das_texture_label(texture: str | Path) -> str:
    """A texture's name in the store: ``original``, ``seed`` or the folder ``das optimize`` wrote it to."""
    return str(texture) if str(texture) in ("original", "seed") else Path(texture).resolve().parent.name


def store_iseg(store: str | None, summaries: Sequence[Any], *, dataset: str, checkpoint: Path | None) -> str:
    """Store the rows of one ``iseg evaluate`` (:func:`iseg_rows`; technique: the checkpoint's name)."""
    technique = Path(checkpoint).stem if checkpoint else "default"
    extra = {"checkpoint_sha256": file_digest(checkpoint)} if checkpoint else {}
    rows = iseg_rows(summaries, dataset=dataset, technique=technique)
    return store_results(store, "iseg", rows, command_settings(**extra))


def store_adapt(
    store: str | None,
    metrics: Mapping[str, Any],
    *,
    checkpoint: Path,
    target: str,
    card: Mapping[str, Any],
    n: int,
) -> str:
    """Store the rows of ``adapt train`` (after its evaluation) or ``adapt evaluate`` (:func:`adapt_rows`).

    Args:
        store: the store path (None: the default store).
        metrics: the evaluation's :meth:`SegMetrics.as_dict`.
        checkpoint: the weights it evaluated.
        target: the labelled evaluation domain.
        card: the checkpoint's card (arch, method, seed).
        n: evaluated images.
    """
    config = card.get("config") or {}
    rows = adapt_rows(
        metrics,
        target=target,
        arch=str(card.get("arch") or config.get("arch")),
        method=str(config.get("method")),
        seed=int(config.get("seed", 0)),
        n=n,
    )
    return store_results(store, "adapt", rows, command_settings(checkpoint_sha256=file_digest(checkpoint)))
