"""``robustvision.evaluate``: the benchmark for any in-memory model, as one function call.

The same planner and the same cell evaluation as ``robustvision bench`` (so the same seeds, images and numbers
for the same cells), without checkpoints or a zoo: pass an ``nn.Module`` that maps ``[0, 1]`` images to logits
(or pass ``mean=``/``std=`` and it is normalised for you) and a data set name or an ``(images, labels)`` pair.
RobustBench users know this as ``benchmark(model, ...)``.

Example:
    >>> import robustvision
    >>> from robustvision.models import create_model
    >>> model = create_model("lenet5", num_classes=10, image_size=8, in_chans=1)   # doctest: +SKIP
    >>> table = robustvision.evaluate(model, "digits", noises=["fgsm", "fog@3"])  # doctest: +SKIP
    >>> table[["noise", "severity", "accuracy"]]                                   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from robustvision.bench.plan import BenchConfig, ModelEntry, load_config
from robustvision.bench.store import CellRecord

MEMORY_PREFIX = "memory:"
#: Metric names stored per cell, in the order the table shows them.
CELL_METRICS = (
    "clean_accuracy",
    "accuracy",
    "robust_accuracy",
    "corruption_error_lower_better",
    "flip_probability_lower_better",
)


class _Normalized(nn.Module):
    """``model`` behind a :class:`~robustvision.models.PixelNormalizer`: takes [0, 1] images."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        from robustvision.models import PixelNormalizer

        super().__init__()
        self.normalizer = PixelNormalizer(mean, std)
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalizer.normalize(images))


def weights_hash(model: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, shapes, dtypes and values): identifies its cells in a store."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _check_output(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> None:
    """One clear error when the model does not return ``N x num_classes`` logits covering the labels."""
    probe = images[:2].to(device)
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as err:  # the model's own error, named as such
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"the model failed on a {tuple(probe.shape)} batch of [0, 1] images: {type(err).__name__}: {first}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(probe):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model must return N x num_classes logits for N images; for {len(probe)} images it returned {shape}"
        )
    top = int(labels.max()) if len(labels) else -1
    if out.shape[1] <= top:
        raise ValueError(
            f"the model returns {out.shape[1]} logits per image but the labels go up to class {top}; "
            "it needs one logit per class"
        )


def _data(data: Any, cfg: BenchConfig) -> Any:
    """The :class:`~robustvision.bench.runner.EvalData` of a data set name or an ``(images, labels)`` pair."""
    from robustvision.bench.runner import EvalData, load_data

    if isinstance(data, str):
        return load_data(cfg)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = (torch.as_tensor(d) for d in data)
        from robustvision.validation import check_images

        check_images(images)
        if labels.dim() != 1 or len(labels) != len(images):
            raise ValueError(f"labels must be a 1-D tensor with one label per image, got shape {tuple(labels.shape)}")
        return EvalData(images.float().contiguous(), labels.long().contiguous())
    raise TypeError("data must be a data set name (robustvision data list) or an (images, labels) pair of tensors")


def evaluate(
    model: nn.Module,
    data: Any = "digits",
    noises: Sequence[str] | str | None = None,
    *,
    store: Any = None,
    device: str = "cpu",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    preset: str = "quick",
    root: str | None = None,
    name: str | None = None,
    technique: str = "standard",
    n_examples: int | None = None,
    n_adversarial: int | None = None,
    severities: Sequence[int] | None = None,
    attack_steps: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> pd.DataFrame:
    """Benchmark one model: the cells ``robustvision bench`` would store, as a table (and in ``store`` if given).

    Args:
        model: an ``nn.Module`` mapping ``N x C x H x W`` images in [0, 1] to ``N x num_classes`` logits (zoo
            models and checkpoints do). It is moved to ``device`` and evaluated in eval mode (its mode is restored).
        data: a data set name (``digits``, ``imagefolder`` with ``root=``...: evaluated on its test split in the
            bench's seeded order) or an ``(images, labels)`` pair of tensors (evaluated in the given order).
        noises: noise selectors as for ``bench --noises`` (``pgd_linf``, ``fog@1,5``, ``natural``, ...); default:
            the preset's suite. ``clean`` is always evaluated.
        store: a :class:`~robustvision.bench.store.ResultsStore`, a store URL or SQLite path, or ``None``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        mean: the per-channel mean of the model's input normalisation, when it expects normalised inputs (it is
            then wrapped in a :class:`~robustvision.models.PixelNormalizer`); give ``std`` with it.
        std: the per-channel standard deviation of that normalisation.
        preset: the bench preset that gives defaults (image counts, severities, budgets, steps).
        root: folder of data sets that need one.
        name: how the model is named in the table and the store (default: its ``arch`` or class name).
        technique: its training technique's name in the table and the store.
        n_examples: images per clean cell (default: the preset's).
        n_adversarial: images per attack cell.
        severities: corruption severities for natural noises given without ``@``.
        attack_steps: iterations of PGD/MIM.
        batch_size: evaluation batch size.
        seed: the base seed every cell's seed derives from.
        progress: called as ``progress(done_cells, total_cells, label)``.

    Returns:
        One row per cell: ``cell_key``, ``dataset``, ``model``, ``technique``, ``noise``, ``kind``, ``severity``,
        ``level``, ``n``, the cell's metrics (``clean_accuracy``, ``accuracy``, ``robust_accuracy``, ...),
        ``accuracy_any`` (whichever accuracy the cell has), ``params``, ``seconds`` and ``config_hash``.

    Raises:
        ValueError: the model returns another shape than ``N x num_classes`` logits, or a bad noise/data argument.
    """
    from robustvision.bench.runner import _MODEL_CACHE, EvalSettings, make_units, prepare, run_local
    from robustvision.runtime import resolve_device

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if (mean is None) != (std is None):
        raise ValueError("give both mean= and std= (or neither)")
    net = _Normalized(model, mean, std) if mean is not None else model
    dataset = data if isinstance(data, str) else "tensors"
    overrides: dict[str, Any] = {
        "dataset": dataset,
        "data_root": root,
        "n_examples": n_examples,
        "n_adversarial": n_adversarial,
        "severities": list(severities) if severities is not None else None,
        "attack_steps": attack_steps,
        "batch_size": batch_size,
        "seed": seed,
        "device": device,
        "checks": False,
        "out": "",
    }
    if noises is not None:
        from robustvision.bench.plan import split_selectors

        overrides["noises"] = split_selectors(list(noises) if not isinstance(noises, str) else noises)
    cfg = load_config(preset, **overrides)
    prepared_data = _data(data, cfg)
    images, labels, files = prepared_data.images, prepared_data.labels, prepared_data.files
    dev = resolve_device(device)
    was_training = net.training
    net = net.to(dev).eval()
    try:
        _check_output(net, images, labels, dev)
        label = name or str(getattr(model, "arch", "") or type(model).__name__)
        key = f"{MEMORY_PREFIX}{label}/{technique}@{id(net):x}"
        entry = ModelEntry(
            name=label,
            technique=technique,
            family=str(getattr(model, "family", "") or ""),
            checkpoint=key,
            checkpoint_hash=weights_hash(net),
        )
        plan = prepare(cfg, [entry], data=prepared_data).plan
        records: list[CellRecord] = []
        settings = EvalSettings(cfg.device, cfg.batch_size, cfg.threads, files=files)
        cache_key = f"{key}|{dev}"
        _MODEL_CACHE[cache_key] = net
        units = make_units(plan.cells)
        total = len(plan.cells)

        def on_records(unit, recs: list[CellRecord]) -> None:
            records.extend(recs)
            if progress is not None:
                progress(len(records), total, unit.label)

        try:
            run_local(units, images, labels, settings, on_records, workers=1, noises=plan.noises)
        finally:
            _MODEL_CACHE.pop(cache_key, None)
    finally:
        net.train(was_training)
    if store is not None:
        _write(store, cfg, records)
    return records_table(records)


def _write(store: Any, cfg: BenchConfig, records: list[CellRecord]) -> None:
    import time
    import uuid

    from robustvision.bench.runner import record_bench_run
    from robustvision.bench.store import ResultsStore

    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    config = {**cfg.to_dict(), "api": "robustvision.evaluate"}

    def write(rs: ResultsStore) -> None:
        record_bench_run(rs, run_id, cfg, config)
        for rec in records:
            rs.write_cell(run_id, rec)

    if isinstance(store, ResultsStore):
        write(store)
    else:
        with ResultsStore(store) as rs:
            write(rs)


def records_table(records: Sequence[CellRecord]) -> pd.DataFrame:
    """One row per cell record, with the identity columns, each metric as a column and ``accuracy_any``."""
    rows = []
    for r in records:
        row: dict[str, Any] = {
            "cell_key": r.cell_key,
            "dataset": r.dataset,
            "model": r.model,
            "technique": r.technique,
            "noise": r.noise,
            "kind": r.kind,
            "severity": r.severity,
            "level": r.level,
            "n": r.n,
            "seed": r.seed,
        }
        row.update(r.metrics)
        row["accuracy_any"] = next(
            (r.metrics[m] for m in ("clean_accuracy", "accuracy", "robust_accuracy") if m in r.metrics), float("nan")
        )
        row["params"] = r.params
        row["seconds"] = r.seconds
        row["config_hash"] = r.config_hash
        rows.append(row)
    table = pd.DataFrame(rows)
    metric_cols = [m for m in CELL_METRICS if m in table.columns]
    other = [c for c in table.columns if c not in metric_cols]
    ident = other[: other.index("n") + 1] if "n" in other else other
    rest = [c for c in other if c not in ident]
    return table[ident + metric_cols + rest] if rows else table
