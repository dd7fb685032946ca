"""Run planned cells in-process or as Ray tasks, writing each finished cell to the results store.

Cells are grouped into *units*: a model-independent noise setting (clean, natural, system, ImageNet-P) is one unit
over every model, so the noisy images are made once and shown to each model; an adversarial cell is a unit of
its own. A unit is a plain function of ``(unit, evaluation data, checkpoints, settings)``, so the local executor
and Ray run exactly the same code and store the same numbers. The driver process is the only writer of the
store: Ray workers return their records and never need database access.

Resuming: cells whose ``(cell_key, config_hash)`` is already stored are dropped before running, and each cell is
committed in its own transaction; killing a run loses at most the cells in flight.
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustvision.bench.plan import (
    CLEAN,
    BenchConfig,
    Cell,
    CellKind,
    ModelEntry,
    NoiseKey,
    Plan,
    config_hash,
    imagenet_p_name,
    noise_settings,
    plan_cells,
)
from robustvision.bench.store import CellRecord, ResultsStore
from robustvision.errors import UserError
from robustvision.runtime import exit_with_parent, make_generator, resolve_device


@dataclass(frozen=True)
class Unit:
    """Cells evaluated together: one model-independent noise setting for several models, or one attack cell."""

    cells: tuple[Cell, ...]

    @property
    def label(self) -> str:
        c = self.cells[0]
        if c.kind == CellKind.CHECK:
            return f"health checks ({c.model}/{c.technique})"
        who = c.model + "/" + c.technique if len(self.cells) == 1 else f"{len(self.cells)} models"
        return f"{c.noise}@{c.severity:.4g} ({who})"


@dataclass(frozen=True)
class EvalSettings:
    """What every unit needs besides its cells: device, batch size, torch threads, and the source image files of
    the evaluation images (in evaluation order) for the system noises that act on the files themselves."""

    device: str = "cpu"
    batch_size: int = 150
    threads: int = 0
    files: tuple[str, ...] = ()


@dataclass
class RunSummary:
    run_id: str
    planned: int
    skipped_existing: int
    written: int
    seconds: float
    plan: Plan
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- grouping
def make_units(cells: Iterable[Cell]) -> list[Unit]:
    """Group cells into units, clean first, then natural/system settings, then attacks (plan order otherwise)."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        key = (c.noise, c.severity) if c.model_independent else (c.noise, c.severity, c.model, c.technique)
        if c.kind == CellKind.CHECK:  # a model's health checks share one clean pass and one default PGD
            key = (CellKind.CHECK.value, c.model, c.technique, c.checkpoint)
        groups.setdefault(key, []).append(c)
    kinds = (CellKind.CLEAN, CellKind.NATURAL, CellKind.SYSTEM, CellKind.ADVERSARIAL, CellKind.CHECK)
    order = {k.value: i for i, k in enumerate(kinds)}
    units = [Unit(tuple(g)) for g in groups.values()]
    return sorted(units, key=lambda u: order.get(u.cells[0].kind, 4))


# ------------------------------------------------------------------------------------------------- evaluation
_MODEL_CACHE: dict[str, torch.nn.Module] = {}


def _load_model(checkpoint: str, blob: tuple[bytes, bytes] | None, device: torch.device) -> torch.nn.Module:
    """Load (and cache per process) a checkpoint, from its path or from ``(weights, card)`` bytes (Ray)."""
    from robustvision.models.checkpoints import load_checkpoint

    key = f"{checkpoint}|{device}"
    if key not in _MODEL_CACHE:
        path = Path(checkpoint)
        if blob is not None and not path.is_file():
            tmp = Path(tempfile.mkdtemp(prefix="rv_ckpt_"))
            path = tmp / Path(checkpoint).name
            path.write_bytes(blob[0])
            path.with_suffix(".json").write_bytes(blob[1])
        model, _ = load_checkpoint(path, device=device)
        _MODEL_CACHE[key] = model.eval()
    return _MODEL_CACHE[key]


@torch.no_grad()
def _predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> np.ndarray:
    preds = [model(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


def _noisy_images(cell: Cell, noise: Any, x: torch.Tensor, y: torch.Tensor, model, settings: EvalSettings, device):
    """Apply ``noise`` batch by batch with the cell's generator (one generator per cell, drawn in batch order)."""
    g = make_generator(cell.seed)
    out = []
    for i in range(0, len(x), settings.batch_size):
        xb, yb = x[i : i + settings.batch_size].to(device), y[i : i + settings.batch_size].to(device)
        out.append(noise(xb, yb, model=model, generator=g).detach().cpu())
    return torch.cat(out)


def evaluate_unit(
    unit: Unit,
    images: torch.Tensor,
    labels: torch.Tensor,
    blobs: dict[str, tuple[bytes, bytes]] | None,
    settings: EvalSettings,
    noises: Mapping[NoiseKey, Any] | None = None,
) -> list[CellRecord]:
    """Evaluate every cell of ``unit``; returns one :class:`CellRecord` per cell.

    Args:
        unit: the cells (they share noise and severity).
        images, labels: the evaluation images (``N x C x H x W`` in [0, 1]) in evaluation order; cells use a prefix.
        blobs: checkpoint bytes by path (Ray workers without the files), or ``None`` to read the paths.
        settings: device, batch size, threads.
        noises: the noises built while planning, by ``(noise, noise_kwargs)`` (:attr:`Plan.noises`); worker
            processes and Ray tasks get them pickled from the driver. A noise not there is built here.
    """
    from robustvision.noises import create_noise

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    first = unit.cells[0]
    if first.kind == CellKind.CHECK:
        from robustvision.bench.health import evaluate_check_unit

        blob = (blobs or {}).get(first.checkpoint)
        model = _load_model(first.checkpoint, blob, device)
        return evaluate_check_unit(unit.cells, images, labels, model, blob)
    n = first.n
    x, y = images[:n], labels[:n]
    records: list[CellRecord] = []
    shared: torch.Tensor | None = None
    sequence = None
    setting = first.setting
    noise = None
    if setting.builds_noise:
        key = setting.key
        noise = noises[key] if noises is not None and key in noises else create_noise(first.noise, **first.kwargs)
    wraps = bool(getattr(noise, "wraps_model", False))
    if getattr(noise, "reads_files", False):  # system noise of the image pipeline: decode/resize the original files
        if len(settings.files) < n:
            raise ValueError(f"{first.noise} reads the original image files; this data set has none")
        shared = noise.load_files(settings.files[:n], int(x.shape[-1])).to(x.dtype)
    for cell in unit.cells:
        t0 = time.perf_counter()
        model = _load_model(cell.checkpoint, (blobs or {}).get(cell.checkpoint), device)
        params: dict[str, Any] = dict(cell.kwargs)
        correct: np.ndarray | None
        preds: np.ndarray | None
        if setting.scored_by_flip:
            from robustvision.bench.metrics import flip_probability
            from robustvision.noises.perturbations import PERTURBATIONS, perturbation_sequence

            name = imagenet_p_name(cell.noise)
            if sequence is None:
                sequence = perturbation_sequence(
                    x, name, frames=cell.kwargs["frames"], generator=make_generator(cell.seed)
                )
            frames = _predict(model, sequence.reshape(-1, *sequence.shape[2:]), settings.batch_size, device)
            frames = frames.reshape(sequence.shape[0], sequence.shape[1])
            fp = flip_probability(frames, noise=PERTURBATIONS[name].noise)
            metrics = {"flip_probability_lower_better": fp}
            correct, preds = frames[0] == y.numpy(), frames[-1]
        else:
            if noise is None:
                xin, eval_model = x, model
            elif wraps:
                xin, eval_model = x, noise.wrap(model)
                params.update(getattr(noise, "params", {}))
            elif cell.model_independent:
                if shared is None:
                    shared = _noisy_images(cell, noise, x, y, None, settings, device)
                xin, eval_model = shared, model
            else:
                xin, eval_model = _noisy_images(cell, noise, x, y, model, settings, device), model
            if noise is not None:
                params.update(getattr(noise, "params", {}))
            preds = _predict(eval_model, xin, settings.batch_size, device)
            correct = preds == y.numpy()
            acc = float(correct.mean()) if len(correct) else float("nan")
            name = (
                "clean_accuracy"
                if cell.noise == CLEAN
                else "robust_accuracy"
                if cell.kind == CellKind.ADVERSARIAL
                else "accuracy"
            )
            metrics = {name: acc}
            if cell.kind == CellKind.NATURAL:
                metrics["corruption_error_lower_better"] = 1.0 - acc
        records.append(
            CellRecord.from_cell(
                cell,
                n=len(y),
                metrics=metrics,
                params=params,
                correct=correct,
                predictions=preds,
                seconds=time.perf_counter() - t0,
            )
        )
    return records


# -------------------------------------------------------------------------------------------------- executors
OnRecords = Callable[[Unit, list[CellRecord]], None]


#: The local executor goes multi-process on its own only for runs at least this long (spawning costs seconds).
AUTO_PROCESSES_MIN_UNITS = 24


def local_workers(requested: int, n_units: int, device: str, noises: Iterable[str] = ()) -> int:
    """Processes the local executor uses: ``requested``, or for 0 one per CPU core (at most 2) on CPU runs of
    :data:`AUTO_PROCESSES_MIN_UNITS`+ units and 1 otherwise. CUDA runs stay in one process, and so do runs with a
    noise registered outside the package (a fresh worker process would not know it)."""
    if requested:
        return requested
    if resolve_device(device).type != "cpu" or n_units < AUTO_PROCESSES_MIN_UNITS:
        return 1
    if not all(_packaged_noise(name) for name in noises):
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def _packaged_noise(name: str) -> bool:
    from robustvision.noises import NOISES

    if name == CLEAN or imagenet_p_name(name) is not None or name.startswith("check:"):
        return True
    if name not in NOISES:
        return False
    builder = NOISES.get(name)
    while isinstance(builder, functools.partial):
        builder = builder.func
    return getattr(builder, "__module__", "").startswith("robustvision.")


def run_local(
    units: list[Unit],
    images,
    labels,
    settings: EvalSettings,
    on_records: OnRecords,
    *,
    workers: int = 1,
    noises: Mapping[NoiseKey, Any] | None = None,
) -> None:
    """Evaluate the units on this machine: one after another in this process (``workers=1``; torch's thread
    count is restored afterwards), or spread over ``workers`` worker processes with ``settings.threads or 1``
    torch threads each. Small CPU models scale far better across processes than across threads; every cell is
    seeded from its key, so the numbers do not depend on the split. Every unit uses ``noises`` (built once while
    planning); worker processes receive them pickled, once each."""
    if workers > 1 and len(units) > 1:
        _run_processes(units, images, labels, settings, on_records, workers, noises)
        return
    threads = torch.get_num_threads()
    try:
        for unit in units:
            on_records(unit, evaluate_unit(unit, images, labels, None, settings, noises))
    finally:
        torch.set_num_threads(threads)


_WORKER_DATA: dict[str, Any] = {}


def _init_worker(parent_pid: int, images, labels, settings: EvalSettings, noises=None) -> None:
    exit_with_parent(parent_pid)  # a killed run must not leave workers behind
    torch.set_num_threads(settings.threads)
    _WORKER_DATA.update(images=images, labels=labels, settings=settings, noises=noises)


def _process_task(unit: Unit) -> list[CellRecord]:
    d = _WORKER_DATA
    return evaluate_unit(unit, d["images"], d["labels"], None, d["settings"], d.get("noises"))


def _run_processes(
    units, images, labels, settings: EvalSettings, on_records: OnRecords, workers: int, noises=None
) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    worker_settings = EvalSettings(settings.device, settings.batch_size, settings.threads or 1, settings.files)
    # spawn, not fork: a forked child of a process whose OpenMP pool is running can deadlock.
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        workers,
        ctx,
        initializer=_init_worker,
        initargs=(os.getpid(), images, labels, worker_settings, dict(noises or {})),
    )
    try:
        # Keep a few units queued per worker so the results stream back in roughly plan order.
        queue = list(reversed(units))
        pending: dict[Any, Unit] = {}
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                unit = queue.pop()
                pending[pool.submit(_process_task, unit)] = unit
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                on_records(pending.pop(future), future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast with one clear line when a ``host:port`` (or ``ray://host:port``) Ray address does not answer."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"Ray address {address!r} is not host:port (or ray://host:port, or auto)")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise UserError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None


def _ray_task(unit, images, labels, blobs, settings, noises=None):  # module level: Ray pickles it by reference
    return evaluate_unit(unit, images, labels, blobs, settings, noises)


def run_ray(
    units: list[Unit],
    images,
    labels,
    settings: EvalSettings,
    on_records: OnRecords,
    *,
    workers: int,
    address: str | None,
    noises: Mapping[NoiseKey, Any] | None = None,
) -> None:
    """Evaluate the units as Ray tasks (a local Ray instance with ``workers`` CPUs, or the cluster at ``address``).

    The driver ships the images, the checkpoint bytes and the noises built while planning through Ray's object
    store, so workers need neither the data set nor the checkpoint files, only the ``robustvision`` package.
    """
    try:
        import ray
    except ImportError:
        raise UserError("the Ray executor needs Ray: pip install 'ray>=2.9'") from None
    if address:
        check_ray_address(address)
    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        try:
            if address:  # a cluster's workers use their own install of robustvision
                ray.init(address=address, **kwargs)
            else:  # local workers import this very checkout, as the driver does
                paths = [str(_package_root()), os.environ.get("PYTHONPATH", "")]
                env = {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
                ray.init(num_cpus=workers, runtime_env={"env_vars": env}, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = address or f"a local Ray instance ({workers} CPUs)"
            raise UserError(f"cannot start Ray on {where}: {str(err).splitlines()[0]}") from None
        started_here = True
    try:
        checkpoints = sorted({c.checkpoint for u in units for c in u.cells})
        blobs = {p: (Path(p).read_bytes(), Path(p).with_suffix(".json").read_bytes()) for p in checkpoints}
        ref_images, ref_labels, ref_blobs = ray.put(images), ray.put(labels), ray.put(blobs)
        ref_noises = ray.put(dict(noises or {}))
        task = ray.remote(num_cpus=1)(_ray_task)
        worker_settings = EvalSettings(settings.device, settings.batch_size, settings.threads or 1, settings.files)
        pending = {task.remote(u, ref_images, ref_labels, ref_blobs, worker_settings, ref_noises): u for u in units}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                unit = pending.pop(ref)
                on_records(unit, ray.get(ref))
    finally:
        if started_here:
            ray.shutdown()


def _package_root() -> Path:
    import robustvision

    return Path(robustvision.__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------------ driver
def load_eval_data(cfg: BenchConfig) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The test split in a seeded evaluation order (cells use prefixes of it, so AR/WCAR align by index)."""
    from robustvision.data import create_dataset

    ds = create_dataset(cfg.dataset, split="test", root=cfg.data_root, seed=cfg.seed)
    x, y = ds.tensors()
    order = torch.randperm(len(y), generator=make_generator(cfg.seed, "eval-order", cfg.dataset))
    return x[order].contiguous(), y[order].contiguous(), ds


def eval_files(ds: Any, cfg: BenchConfig) -> tuple[str, ...]:
    """The source files of the evaluation images, in the order of :func:`load_eval_data` (empty when the data set
    is not read from files one image per file)."""
    samples = getattr(ds, "samples", None)
    if not samples:
        return ()
    order = torch.randperm(len(samples), generator=make_generator(cfg.seed, "eval-order", cfg.dataset))
    return tuple(str(samples[int(i)][0]) for i in order)


@dataclass(frozen=True)
class EvalData:
    """The evaluation images (``N x C x H x W`` in [0, 1]) and labels in evaluation order, and the source file of
    each image (empty when the data set is not read from image files)."""

    images: torch.Tensor
    labels: torch.Tensor
    files: tuple[str, ...] = ()

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])


def load_data(cfg: BenchConfig) -> EvalData:
    """The config's test split in the seeded evaluation order, with its source files (:func:`load_eval_data`)."""
    images, labels, ds = load_eval_data(cfg)
    return EvalData(images, labels, eval_files(ds, cfg))


@dataclass
class Prepared:
    """Everything a run needs before its first cell: the data (loaded once), the models, the plan (health-check
    cells included when ``cfg.checks``) and every noise of the plan, built once (``plan.noises``)."""

    cfg: BenchConfig
    data: EvalData
    models: list[ModelEntry]
    plan: Plan


def prepare(
    cfg: BenchConfig,
    models: list[ModelEntry] | None = None,
    *,
    data: EvalData | None = None,
    log: Callable[[str], None] | None = None,
    before_models: Callable[[], None] | None = None,
) -> Prepared:
    """Load the data, check and build the noise settings, resolve the models and plan the cells: once per run.

    The order makes bad input fail cheaply: the noise list (names, budgets, severities) is checked on the data
    set before any model is trained or downloaded.

    Args:
        cfg: the validated config.
        models: the model variants; default: :func:`robustvision.bench.sources.resolve_models` (which may train
            or download the zoo).
        data: the evaluation data when already loaded (``robustvision.evaluate`` on tensors); default: loaded here.
        log: messages of :func:`~robustvision.bench.sources.resolve_models`.
        before_models: called after the noise list is checked and before the models are resolved (the bench
            command opens its results store there, so that a bad store fails before any training).
    """
    data = data if data is not None else load_data(cfg)
    suite = noise_settings(cfg, image_size=data.image_size, channels=data.channels, has_files=bool(data.files))
    if before_models is not None:
        before_models()
    if models is None:
        from robustvision.bench.sources import resolve_models

        models = resolve_models(cfg, log=log if log is not None else print, image_size=data.image_size)
    shape = {"image_size": data.image_size, "channels": data.channels, "test_size": len(data.labels)}
    plan = plan_cells(cfg, models, **shape, has_files=bool(data.files), suite=suite)
    if cfg.checks:
        from robustvision.bench.health import plan_check_cells

        plan.cells.extend(plan_check_cells(cfg, models, **shape))
    return Prepared(cfg=cfg, data=data, models=models, plan=plan)


def record_bench_run(store: ResultsStore, run_id: str, cfg: BenchConfig, config: dict[str, Any]) -> None:
    """Record one bench run (its config, hash, package version and git commit) in ``store``."""
    import robustvision
    from robustvision.runtime import git_commit

    store.record_run(
        run_id,
        dataset=cfg.dataset,
        preset=cfg.preset,
        config=config,
        config_hash=config_hash(config),
        package_version=robustvision.__version__,
        git_commit=git_commit(),
    )


def run_bench(
    cfg: BenchConfig,
    models: list[ModelEntry] | None,
    store: ResultsStore,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    run_id: str | None = None,
    prepared: Prepared | None = None,
) -> RunSummary:
    """Plan, skip what is stored, run the rest with the configured executor and store every cell.

    Args:
        cfg: validated config.
        models: model variants (from the zoo or checkpoints); ignored when ``prepared`` is given.
        store: an open results store.
        progress: called as ``progress(done_cells, total_cells, label)`` after each unit.
        run_id: this invocation's id (default: a new one).
        prepared: the run's :func:`prepare` (data, models, plan, built noises); default: prepared here.
    """
    t0 = time.perf_counter()
    if prepared is None:
        prepared = prepare(cfg, models)
    plan, images, labels, files = prepared.plan, prepared.data.images, prepared.data.labels, prepared.data.files
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    record_bench_run(store, run_id, cfg, cfg.to_dict())
    have = store.stored_cells((c.key, c.config_hash) for c in plan.cells)
    todo = [c for c in plan.cells if (c.key, c.config_hash) not in have]
    # Another run on this store may be computing some of these cells now: leave them to it (see ResultsStore.claims).
    busy = store.claim_cells(run_id, [(c.key, c.config_hash) for c in todo])
    todo = [c for c in todo if (c.key, c.config_hash) not in busy]
    notes = list(plan.skipped)
    if busy:
        others = ", ".join(sorted(set(busy.values())))
        notes.append(
            f"{len(busy)} cell(s) left to run {others}, which is computing them on this store now; "
            "run again after it ends to fill in any it did not store"
        )
    units = make_units(todo)
    settings = EvalSettings(cfg.device, cfg.batch_size, cfg.threads, files)
    resolve_device(cfg.device)  # a bad device fails before any work
    written = 0
    done = 0

    def on_records(unit: Unit, records: list[CellRecord]) -> None:
        nonlocal written, done
        for rec in records:
            written += int(store.write_cell(run_id, rec))
        store.refresh_claims(run_id)
        done += len(records)
        if progress is not None:
            progress(done, len(todo), unit.label)

    if progress is not None:
        progress(0, len(todo), "starting")
    try:
        if cfg.executor == "ray":
            ray_cpus = cfg.workers or max(1, os.cpu_count() or 1)
            run_ray(
                units,
                images,
                labels,
                settings,
                on_records,
                workers=ray_cpus,
                address=cfg.ray_address,
                noises=plan.noises,
            )
        else:
            workers = local_workers(cfg.workers, len(units), cfg.device, {u.cells[0].noise for u in units})
            run_local(units, images, labels, settings, on_records, workers=workers, noises=plan.noises)
    finally:
        store.release_claims(run_id)
    return RunSummary(
        run_id=run_id,
        planned=len(plan.cells),
        skipped_existing=len(plan.cells) - len(todo) - len(busy),
        written=written,
        seconds=time.perf_counter() - t0,
        plan=plan,
        notes=notes,
    )
