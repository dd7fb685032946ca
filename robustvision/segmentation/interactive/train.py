"""Training EdgeFlow (or its ablation) with RITM's iterative click simulation.

Per batch: initial clicks are sampled (the first positive in the object's core, as the evaluation's first
click falls; a few extra positives and negatives at random), then ``0..max_next_clicks`` extra clicks are
added one by one with the network in eval mode and no gradient, each from RITM's ``get_next_points`` on the
current prediction (:func:`~robustvision.segmentation.interactive.clicks.sample_next_click`); the previous
edge map (EdgeFlow) or mask (ablation) of that loop is the third click channel of the final, trained pass.

Losses: normalized focal loss on the final and the coarse mask, BCE (weight 0.4) on the OCR aux output,
and for EdgeFlow a class-balanced BCE on a 2-px ground-truth boundary band.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from robustvision.fileio import atomic_torch_save
from robustvision.runtime import resolve_device, seed_from_key, seeded
from robustvision.segmentation.interactive.clicks import Click, clicks_to_points, disk_maps, sample_next_click
from robustvision.segmentation.interactive.losses import boundary_loss, masked_bce, normalized_focal_loss
from robustvision.segmentation.interactive.model import EdgeFlowConfig, build_edgeflow, save_edgeflow
from robustvision.segmentation.interactive.predictor import mask_boundary


@dataclass
class EdgeFlowTrainConfig:
    """The ``robustvision iseg train`` recipe (saved in the model card).

    Attributes:
        steps: optimisation steps.
        batch_size: samples per step.
        crop: square training crop side.
        lr: Adam learning rate (cosine decay after ``warmup`` steps).
        warmup: linear warm-up steps.
        max_next_clicks: most iterative (simulated) clicks added before the trained pass (RITM: 3).
        extra_clicks: most random positives, and most random negatives, added to the first click (default 3).
            Above 3 the counts follow the law of RITM's ``MultiPointSampler`` (P(k) proportional to 0.8**k on
            0..extra_clicks; RITM goes up to 24), so the network also sees the crowded click maps of late
            interactions.
        edge_weight: weight of the boundary loss.
        aux_weight: weight of the aux BCE (RITM: 0.4).
        seed: the run's seed.
        minutes: wall-clock cap; training stops when reached (the card records the steps done) and the cosine
            schedule decays over this budget when it is the shorter one. 0 = none.
        train_set: ``synthetic`` (download-free), ``sbd``, ``lvis`` / ``coco_lvis`` (the public layout under
            ``root``), or real sources mixed by weight: ``duts`` (a DUTS-style folder at ``root``; its
            :func:`~robustvision.segmentation.interactive.data.duts_split` validation names are never read),
            ``coco`` (the ``annotations`` / ``images`` pairs; without them the public layout under ``root``),
            e.g. ``duts:0.6,coco:0.4``.
        root: data root for the real training sets.
        annotations: COCO-format JSON files for ``coco`` (each with the image folder of the same position in
            ``images``).
        images: image folders, one per file of ``annotations``.
        backbone_lr_mult: learning-rate factor of the pretrained backbone's parameters (RITM: 0.1).
        samples: synthetic samples per epoch.
        threads: torch CPU threads (1 is fastest on a loaded 2-core machine).
        overflow_prob: probability that a sample starts from a simulated *overflowing* previous mask (the object
            plus a piece of the background around it) with a negative click placed in the overflow by the
            simulated user: it makes the network learn to obey negative clicks, which the synthetic objects
            rarely demand on their own (the session-3 checkpoints ignored them on GrabCut). 0 = off.
        single_click_prob: share of samples trained in the first-click state alone: the one click in the object's
            core, no extra or simulated clicks, an empty previous mask. With ``extra_clicks`` 8 and iterative
            clicks that state is otherwise ~1 % of the samples, while every evaluation starts from it (IoU@1).
            0 = off.
        workers: parallel workers for the CPU side of a step: that many data-loader processes synthesise
            samples and that many threads simulate the clicks (0 = all in the main thread). The result does
            not depend on it (each sample's data and clicks come from their own seeds); on a GPU it is what
            keeps the accelerator fed.
        checkpoint_every: write the resumable training state (``<out>.state.pt``) every this many steps.
        init: start from the weights of this EdgeFlow checkpoint (same architecture) instead of from scratch;
            the schedule starts afresh (fine-tuning or a longer second round).
        model: the architecture.
    """

    steps: int = 1000
    batch_size: int = 8
    crop: int = 160
    lr: float = 1e-3
    warmup: int = 50
    max_next_clicks: int = 3
    extra_clicks: int = 3
    edge_weight: float = 1.0
    aux_weight: float = 0.4
    seed: int = 0
    minutes: float = 0.0
    train_set: str = "synthetic"
    root: str | None = None
    annotations: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    backbone_lr_mult: float = 0.1
    samples: int = 20000
    threads: int = 1
    overflow_prob: float = 0.0
    single_click_prob: float = 0.0
    workers: int = 0
    checkpoint_every: int = 100
    init: str | None = None
    model: EdgeFlowConfig = field(default_factory=EdgeFlowConfig)


#: Inference settings written into the card; ``target_size`` and ``max_side`` are set to the training crop so
#: the network sees objects at the scale it learned (192/256 with 128-px training crops gave IoU@1 0.08 on
#: GrabCut against 0.22 at 128 on the first 5 images).
DEFAULT_INFERENCE = {"min_crop": 100, "zoom_in": True, "skip_clicks": 1}


def boundary_band(mask: torch.Tensor, width: int = 1) -> torch.Tensor:
    """``B x 1 x H x W`` {0,1} band of ``2 * width`` px around the boundary of binary ``mask`` (``B x 1 x H x W``)."""
    k = 2 * width + 1
    dil = torch.nn.functional.max_pool2d(mask, k, 1, width)
    ero = -torch.nn.functional.max_pool2d(-mask, k, 1, width)
    return (dil - ero).clamp(0, 1)


def _extra_count(rng: np.random.Generator, default_table: list[float], most: int) -> int:
    """How many extra random clicks of one sign: the short default table for ``most == 3``, else RITM's
    geometric law P(k) ~ 0.8**k on 0..most."""
    if most == 3:
        return int(rng.choice(4, p=default_table))
    p = 0.8 ** np.arange(most + 1)
    return int(rng.choice(most + 1, p=p / p.sum()))


def initial_clicks(gt: np.ndarray, valid: np.ndarray, rng: np.random.Generator, extra: int = 3) -> list[Click]:
    """Initial training clicks: one positive in the object's core, plus 0-``extra`` positives and negatives."""
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    first = sample_next_click(np.zeros_like(gt), gt, valid, generator=g)
    clicks = [first] if first is not None else []
    dt_in = cv2.distanceTransform(np.pad(gt.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    dt_out = cv2.distanceTransform(np.pad((~gt).astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    n_pos = _extra_count(rng, [0.6, 0.2, 0.12, 0.08], extra)
    n_neg = _extra_count(rng, [0.45, 0.25, 0.18, 0.12], extra)
    ys, xs = np.where((dt_in > 3) & valid)
    for _ in range(n_pos if len(ys) else 0):
        i = rng.integers(len(ys))
        clicks.append(Click(int(ys[i]), int(xs[i]), True))
    near = (dt_out > 3) & (dt_out < 30) & valid if rng.random() < 0.6 else (dt_out > 3) & valid
    ys, xs = np.where(near)
    for _ in range(n_neg if len(ys) else 0):
        i = rng.integers(len(ys))
        clicks.append(Click(int(ys[i]), int(xs[i]), False))
    return clicks


def overflow_start(
    gt: np.ndarray, valid: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, Click | None] | None:
    """A simulated overflowing previous mask for ``gt`` (``H x W`` bool) and the negative click the simulated user
    puts in it, or ``None`` when the object leaves no room around it.

    The overflow is the part of a ring around the object (2-25% of the crop wide) that falls in a disk centred on
    a random ring pixel, so it is one blob of background touching the object, as an over-segmentation is.
    """
    size = gt.shape[0]
    r = int(rng.integers(max(2, size // 50), max(3, size // 4)))
    ring = cv2.dilate(gt.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    ring = ring.astype(bool) & ~gt & valid
    ys, xs = np.nonzero(ring)
    if len(ys) < 20:
        return None
    i = int(rng.integers(len(ys)))
    radius = rng.uniform(0.1, 0.4) * size
    yy, xx = np.ogrid[:size, : gt.shape[1]]
    blob = ring & ((yy - ys[i]) ** 2 + (xx - xs[i]) ** 2 <= radius * radius)
    prev = gt | blob
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    return prev, sample_next_click(prev, gt, valid, generator=g)


def _coord(aux: torch.Tensor, clicks: list[list[Click]], size: int) -> torch.Tensor:
    pts = clicks_to_points(clicks, device=aux.device)
    return torch.cat([aux, disk_maps(pts, size, size)], dim=1)


def compute_loss(
    out: dict[str, torch.Tensor], gt: torch.Tensor, valid: torch.Tensor, cfg: EdgeFlowTrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss and its parts. ``gt`` and ``valid`` are ``B x 1 x H x W`` floats."""
    parts = {"nfl": normalized_focal_loss(out["instances"], gt, valid)}
    parts["aux"] = cfg.aux_weight * masked_bce(out["aux"], gt, valid)
    if "edges" in out:
        parts["coarse"] = normalized_focal_loss(out["coarse"], gt, valid)
        parts["edge"] = cfg.edge_weight * boundary_loss(out["edges"], boundary_band(gt), valid)
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def build_train_set(cfg: EdgeFlowTrainConfig) -> Dataset:
    """The training data set the recipe names."""
    from robustvision.segmentation.interactive.data import (
        COCO_TRAIN_FILES,
        CocoAnnotations,
        CocoInstances,
        CropSamples,
        DutsFolder,
        MixedObjects,
        SyntheticObjects,
        duts_split,
        load_sbd,
        parse_mix,
    )

    if len(cfg.annotations) != len(cfg.images):
        raise ValueError(
            f"each --annotations needs its --images folder: got {len(cfg.annotations)} and {len(cfg.images)}"
        )
    legacy = cfg.train_set in ("synthetic", "sbd", *COCO_TRAIN_FILES) and not (
        cfg.train_set == "coco" and cfg.annotations
    )
    if not legacy:
        mix = parse_mix(cfg.train_set, known=("duts", "coco", "synthetic", "sbd", "lvis", "coco_lvis"))
        if set(mix) - {"duts", "coco"}:
            raise ValueError(f"only duts and coco mix by weight, got {cfg.train_set!r}")
        sources: dict[str, tuple[object, float]] = {}
        if "duts" in mix:
            if not cfg.root:
                raise ValueError("--train-set duts needs --root pointing at the DUTS-style folder")
            train_names, _ = duts_split(cfg.root)
            sources["duts"] = (DutsFolder(cfg.root, train_names), mix["duts"])
        if "coco" in mix:
            if not cfg.annotations:
                raise ValueError("--train-set coco in a mix needs --annotations FILE --images DIR (repeatable)")
            sources["coco"] = (CocoAnnotations(list(zip(cfg.annotations, cfg.images, strict=True))), mix["coco"])
        return MixedObjects(sources, cfg.samples, cfg.crop, cfg.seed)
    if cfg.annotations:
        raise ValueError(f"--annotations/--images apply to --train-set coco or a mix, not {cfg.train_set!r}")
    if cfg.train_set == "synthetic":
        return SyntheticObjects(cfg.samples, cfg.crop, cfg.seed)
    if cfg.train_set == "sbd":
        if not cfg.root:
            raise ValueError("--train-set sbd needs --root pointing at the SBD folder")
        return CropSamples(load_sbd(cfg.root, "train"), cfg.crop, cfg.seed)
    if cfg.train_set in COCO_TRAIN_FILES:
        if not cfg.root:
            raise ValueError(f"--train-set {cfg.train_set} needs --root pointing at the COCO folder")
        return CocoInstances(cfg.root, cfg.train_set, cfg.crop, cfg.seed)
    known = ", ".join(["synthetic", "sbd", "duts", *COCO_TRAIN_FILES, "duts:0.6,coco:0.4"])
    raise ValueError(f"unknown train set {cfg.train_set!r}; known: {known}")


def state_path(out_path: str | Path) -> Path:
    """Where :func:`train_edgeflow` keeps the resumable state of a run writing ``out_path``."""
    return Path(out_path).with_suffix(".state.pt")


class _EpochBatches:
    """Batch indices for steps ``start, start + 1, ...``: epoch ``e`` is a permutation seeded by ``(seed, e)``,
    so step ``s`` always sees the same samples and a resumed run continues the exact sequence."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0):
        if n < batch_size:
            raise ValueError(f"the training set has {n} samples, fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        self.per_epoch = n // batch_size

    def __iter__(self):
        step = self.start
        while True:
            epoch, j = divmod(step, self.per_epoch)
            perm = torch.randperm(
                self.n, generator=torch.Generator().manual_seed(seed_from_key(self.seed, "iseg-epoch", epoch))
            )
            yield perm[j * self.batch_size : (j + 1) * self.batch_size].tolist()
            step += 1


def _comparable(recipe: dict[str, Any]) -> dict[str, Any]:
    # Settings that may change between an interrupted run and its resumption without changing the result.
    return {k: v for k, v in recipe.items() if k not in ("threads", "workers", "checkpoint_every")}


def _save_state(path: Path, net, opt, cfg: EdgeFlowTrainConfig, step: int, elapsed: float, history, running) -> None:
    state = {
        "format": "robustvision.iseg.train-state/1",
        "recipe": asdict(cfg),
        "step": step,
        "elapsed": elapsed,
        "history": history,
        "running": running,
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
    }
    atomic_torch_save(state, path)


def _load_state(path: Path, cfg: EdgeFlowTrainConfig, device: torch.device) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable training state ({err}); delete it to start afresh") from None
    if not isinstance(state, dict) or state.get("format") != "robustvision.iseg.train-state/1":
        raise ValueError(f"{path} is not an iseg training state; delete it to start afresh")
    theirs, ours = _comparable(state["recipe"]), _comparable(asdict(cfg))
    if theirs != ours:
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise ValueError(
            f"{path} was written by a run with another recipe (differs in: {', '.join(diff)}); "
            "use the same options to resume, or delete it to start afresh"
        )
    return state


def _init_weights(net: torch.nn.Module, path: str, cfg: EdgeFlowTrainConfig) -> None:
    from robustvision.segmentation.interactive.model import load_edgeflow

    init, card = load_edgeflow(path)
    if asdict(init.config) != asdict(cfg.model):
        raise ValueError(
            f"--init {path} has another architecture ({card['model']}) than this run ({asdict(cfg.model)})"
        )
    net.load_state_dict(init.state_dict())


def train_edgeflow(
    cfg: EdgeFlowTrainConfig,
    out_path: str | Path,
    device: str | torch.device = "cpu",
    log: Callable[[int, dict[str, float]], None] | None = None,
    log_every: int = 25,
    resume: bool = False,
) -> dict[str, Any]:
    """Train with the recipe ``cfg`` and write ``out_path`` (.safetensors) + model card; returns the card.

    Every ``cfg.checkpoint_every`` steps the full training state (weights, optimiser, step, elapsed time, log)
    goes to :func:`state_path` ``(out_path)``. With ``resume=True`` a run continues from that state exactly
    where it stopped (same recipe required; the wall-clock cap counts the time already spent); the state file
    is removed once the checkpoint is written.

    Raises:
        ValueError: an unreadable or mismatching training state, ``cfg.init`` of another architecture.
    """
    dev = resolve_device(device)
    if dev.type == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    # Weight initialisation, the data loader's base seed and the layers' own draws use the global generators:
    # seeded from cfg.seed for the run and given back to the caller afterwards. Clicks and batches draw from
    # per-step generators (seed_from_key).
    with seeded(cfg.seed):
        return _train_edgeflow(cfg, out_path, dev, log, log_every, resume)


def _train_edgeflow(
    cfg: EdgeFlowTrainConfig,
    out_path: str | Path,
    dev: torch.device,
    log: Callable[[int, dict[str, float]], None] | None,
    log_every: int,
    resume: bool,
) -> dict[str, Any]:
    """The body of :func:`train_edgeflow`, run with the global generators seeded from ``cfg.seed``."""
    data = build_train_set(cfg)
    net = build_edgeflow(cfg.model, pretrained=not (cfg.init or resume and state_path(out_path).is_file()))
    if cfg.init:
        _init_weights(net, cfg.init, cfg)
    net = net.to(dev)
    pretrained_ids = {id(p) for p in net.backbone_parameters()}
    groups = [
        {"params": [p for p in net.parameters() if id(p) not in pretrained_ids], "lr_mult": 1.0},
        {"params": [p for p in net.parameters() if id(p) in pretrained_ids], "lr_mult": cfg.backbone_lr_mult},
    ]
    opt = torch.optim.Adam([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.999))
    state_file = state_path(out_path)
    step, elapsed, history = 0, 0.0, []
    running: dict[str, float] = {}
    if resume and state_file.is_file():
        state = _load_state(state_file, cfg, dev)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        history, running = list(state["history"]), dict(state["running"])
    loader = DataLoader(
        data,
        batch_sampler=_EpochBatches(len(data), cfg.batch_size, cfg.seed, start=step),
        num_workers=cfg.workers,
        worker_init_fn=_single_threaded_worker if cfg.workers else None,
        persistent_workers=cfg.workers > 0,
        # spawn, not fork: a forked child deadlocks in OpenCV/OpenMP thread pools the parent already started
        multiprocessing_context="spawn" if cfg.workers else None,
        pin_memory=dev.type == "cuda",
    )
    pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="iseg-clicks") if cfg.workers > 1 else None
    pmap = pool.map if pool is not None else map

    def lr_at(step: int) -> float:
        # Cosine decay over whichever budget runs out first (steps or the wall-clock cap), so a time-capped
        # run on a slow or busy machine still ends at a low learning rate.
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        if cfg.minutes:
            progress = max(progress, (time.time() - start) / (cfg.minutes * 60))
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    start = time.time() - elapsed
    stopped_early = False
    last_log = [step, time.time()]
    try:
        if step < cfg.steps:
            for images, masks in loader:
                if cfg.minutes and time.time() - start > cfg.minutes * 60:
                    stopped_early = True
                    break
                rng = np.random.default_rng(seed_from_key(cfg.seed, "iseg-train-step", step))
                n = len(images)
                rngs = [np.random.default_rng(seed_from_key(cfg.seed, "iseg-train-step", step, b)) for b in range(n)]
                gt_np, valid_np = (masks == 1).numpy(), (masks != 255).numpy()
                images, masks = images.to(dev, non_blocking=True), masks.to(dev, non_blocking=True)
                valid = (masks != 255).float().unsqueeze(1)
                gt = (masks == 1).float().unsqueeze(1)
                clicks = list(pmap(initial_clicks, gt_np, valid_np, rngs, [cfg.extra_clicks] * n))
                single = _single_click_samples(cfg, step, n)
                clicks = [c[:1] if alone else c for c, alone in zip(clicks, single, strict=True)]
                aux = torch.zeros_like(gt)
                if cfg.overflow_prob > 0:
                    starts = list(pmap(_maybe_overflow, gt_np, valid_np, rngs, [cfg.overflow_prob] * n))
                    for b, overflow in enumerate(starts):
                        if overflow is not None and not single[b]:
                            prev, click = overflow
                            aux_b = mask_boundary(prev) if net.uses_edge else prev.astype(np.float32)
                            aux[b, 0] = torch.from_numpy(aux_b).to(dev)
                            if click is not None:
                                clicks[b].append(click)
                n_iter = int(rng.integers(0, cfg.max_next_clicks + 1))
                if n_iter:
                    net.eval()
                    with torch.no_grad():
                        cache = net.encode_image(images)
                        for _ in range(n_iter):
                            out = net.decode(cache, _coord(aux, clicks, cfg.crop))
                            prob = torch.sigmoid(out["instances"])
                            pred = (prob[:, 0] > 0.49).cpu().numpy()
                            aux = torch.sigmoid(out["edges"]) if net.uses_edge else prob
                            if any(single):  # first-click samples keep no history
                                aux = aux.clone()
                                aux[torch.tensor(single, device=dev)] = 0.0
                            for b, c in enumerate(pmap(_next_click, pred, gt_np, valid_np, rngs)):
                                if c is not None and not single[b]:
                                    clicks[b].append(c)
                    net.train()
                for group in opt.param_groups:
                    group["lr"] = lr_at(step) * group.get("lr_mult", 1.0)
                out = net(images, _coord(aux, clicks, cfg.crop))
                loss, parts = compute_loss(out, gt, valid, cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    pred = torch.sigmoid(out["instances"]) > 0.49
                    inter = ((pred & (gt > 0.5)) * valid.bool()).sum(dim=(1, 2, 3)).float()
                    union = (((pred | (gt > 0.5)) * valid.bool()).sum(dim=(1, 2, 3))).float().clamp_min(1)
                    parts["iou"] = float((inter / union).mean())
                parts["loss"] = float(loss.detach())
                for k, v in parts.items():
                    running[k] = 0.9 * running.get(k, v) + 0.1 * v
                step += 1
                row = None
                if step % log_every == 0 or step == cfg.steps:
                    now = time.time()
                    rate = (step - last_log[0]) / max(now - last_log[1], 1e-9)
                    last_log[:] = [step, now]
                    row = {
                        "step": step,
                        "seconds": round(now - start, 1),
                        "steps_per_s": round(rate, 4),
                        **{k: round(v, 4) for k, v in running.items()},
                    }
                    history.append(row)
                if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    _save_state(state_file, net, opt, cfg, step, time.time() - start, history, running)
                if row is not None and log is not None:
                    log(step, row)
                if step >= cfg.steps:
                    break
    finally:
        if pool is not None:
            pool.shutdown()
    wall = time.time() - start
    card = {
        "name": "edgeflow" if cfg.model.edge_flow else "edgeflow_noedge",
        "paper": "Hao et al., EdgeFlow, ICCVW 2021, arXiv:2109.09406",
        "recipe": asdict(cfg),
        "seed": cfg.seed,
        "steps_done": step,
        "stopped_early_at_time_cap": stopped_early,
        "wall_seconds": round(wall, 1),
        "device": str(dev),
        "train_data": _describe(data),
        "final_running": {k: round(v, 4) for k, v in running.items()},
        "history": history,
        "inference": {**DEFAULT_INFERENCE, "target_size": cfg.crop, "max_side": cfg.crop},
        "command": "robustvision iseg train " + " ".join(_cli_args(cfg)),
    }
    save_edgeflow(net.cpu(), out_path, card)
    state_file.unlink(missing_ok=True)
    return json.loads(Path(out_path).with_suffix(".json").read_text())


def _single_click_samples(cfg: EdgeFlowTrainConfig, step: int, n: int) -> list[bool]:
    """Which of the ``n`` samples of ``step`` train in the first-click state (own generators: a recipe without
    first-click samples draws exactly what it drew before the option existed)."""
    if cfg.single_click_prob <= 0:
        return [False] * n
    return [
        np.random.default_rng(seed_from_key(cfg.seed, "iseg-single-click", step, b)).random() < cfg.single_click_prob
        for b in range(n)
    ]


def _maybe_overflow(gt: np.ndarray, valid: np.ndarray, rng: np.random.Generator, prob: float):
    # the sample's own generator decides, so the run stays a pure function of (seed, step, sample)
    return overflow_start(gt, valid, rng) if rng.random() < prob else None


def _next_click(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> Click | None:
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    return sample_next_click(pred, gt, valid, generator=g)


def _single_threaded_worker(_: int) -> None:
    # Data-loader processes: one thread each, or N workers x M library threads oversubscribe the cores.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _describe(data: Dataset) -> str:
    if hasattr(data, "describe"):
        return data.describe()
    photos = getattr(data, "photos", None)
    if photos is not None:
        return (
            f"SyntheticObjects: {len(data)} samples/epoch from {len(photos)} package-shipped photos "  # type: ignore[arg-type]
            "(skimage, sklearn, matplotlib) and ../shared/data/backgrounds when present"
        )
    return f"{type(data).__name__}: {len(data)} samples"  # type: ignore[arg-type]


def _cli_args(cfg: EdgeFlowTrainConfig) -> list[str]:
    args = [
        f"--steps {cfg.steps}",
        f"--batch-size {cfg.batch_size}",
        f"--crop {cfg.crop}",
        f"--lr {cfg.lr}",
        f"--seed {cfg.seed}",
        f"--max-next-clicks {cfg.max_next_clicks}",
    ]
    if cfg.model.backbone == "hrnet18":
        args.append(f"--width {cfg.model.width}")
    else:
        args.append(f"--backbone {cfg.model.backbone}")
    if cfg.minutes:
        args.append(f"--minutes {cfg.minutes}")
    if not cfg.model.edge_flow:
        args.append("--no-edge-flow")
    if cfg.train_set != "synthetic":
        args.append(f"--train-set {cfg.train_set}" + (f" --root {cfg.root}" if cfg.root else ""))
    args.extend(f"--annotations {a} --images {i}" for a, i in zip(cfg.annotations, cfg.images, strict=True))
    if cfg.samples != EdgeFlowTrainConfig.samples:
        args.append(f"--samples {cfg.samples}")
    if cfg.backbone_lr_mult != EdgeFlowTrainConfig.backbone_lr_mult:
        args.append(f"--backbone-lr-mult {cfg.backbone_lr_mult}")
    if cfg.model.blocks != EdgeFlowConfig.blocks:
        args.append(f"--blocks {cfg.model.blocks}")
    if cfg.overflow_prob:
        args.append(f"--overflow-prob {cfg.overflow_prob}")
    if cfg.single_click_prob:
        args.append(f"--single-click-prob {cfg.single_click_prob}")
    if cfg.extra_clicks != EdgeFlowTrainConfig.extra_clicks:
        args.append(f"--extra-clicks {cfg.extra_clicks}")
    if cfg.warmup != EdgeFlowTrainConfig.warmup:
        args.append(f"--warmup {cfg.warmup}")
    if cfg.init:
        args.append(f"--init {cfg.init}")
    return args
