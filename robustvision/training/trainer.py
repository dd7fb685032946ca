"""One Trainer for every classifier of the package: seeded, resumable, AMP on CUDA, DDP under ``torchrun``.

Exact resume. Every random draw of epoch ``e`` comes from generators seeded by ``(seed, e, rank)``: the data order
(``DistributedSampler``-style), augmentation, attacks and the global torch RNG that dropout and drop-path use. A
checkpoint at the end of each epoch holds the model, optimizer, scheduler, gradient scaler, EMA weights and RNG
states, so ``resume=True`` continues from the next epoch to the same weights an uninterrupted run reaches.

Distributed. Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the Trainer joins the process group
(gloo on CPU, nccl on CUDA), wraps the model in ``DistributedDataParallel`` and shards the data with a
``DistributedSampler``; ``batch_size`` is per process. Only rank 0 writes files or draws a progress bar.

Other recipes. The GBN defences (:mod:`robustvision.defenses.train`) and the DAS targets
(:mod:`robustvision.physical.train`) train through the same Trainer with their own step: a ``loss_fn`` hook, and the
keyword options that reproduce their recipes exactly: one run ``generator`` for the data order and every draw of
the step (instead of the per-epoch keyed generators), ``drop_last``, ``max_steps_per_epoch``, an ``optimizers``
factory (parameter groups, several optimisers stepped together), a ``schedulers`` factory (stepped per batch;
``ReduceLROnPlateau`` per epoch on ``epoch_metric``) and a ``prepare`` hook for the batch.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from robustvision.fileio import atomic_torch_save
from robustvision.runtime import make_generator, resolve_device, seed_from_key
from robustvision.training.config import TrainConfig
from robustvision.training.progress import progress_bar
from robustvision.training.schedule import warmup_cosine
from robustvision.training.techniques import random_translate, training_loss

CHECKPOINT_NAME = "last.pt"
LossFn = Callable[["Trainer", torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]]
PrepareFn = Callable[["Trainer", torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
OptimizerFactory = Callable[[nn.Module], Sequence[torch.optim.Optimizer]]
SchedulerFactory = Callable[["Trainer"], Sequence[Any]]
EVENTS: tuple[str, ...] = ("on_epoch_start", "on_batch_end", "on_epoch_end")


class TensorPairs(Dataset):
    """A training set held in memory as two tensors of the same length; the Trainer indexes them directly.

    ``images`` may have any dtype (a ``prepare`` hook converts them); ``labels`` are class indices or any
    per-sample target rows a ``loss_fn`` reads.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


# ---- distributed helpers -------------------------------------------------------------------------------------------


def dist_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``(0, 1, 0)`` when not under torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class ModelEMA:
    """Exponential moving average of a model's floating-point state (weights and BN statistics).

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates, so short runs are not dominated
    by the random initialisation (the TensorFlow / timm convention).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                ema_v.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights only: biases, norm scales and tokens (ndim <= 1) get none (timm's convention)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith((".pos_embed", ".cls_token", ".dist_token")) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, total: int, warmup: int, config: TrainConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up from ``warmup_start``, then cosine or constant."""
    return warmup_cosine(
        step,
        total,
        warmup,
        warmup_start=config.warmup_start,
        min_factor=config.min_lr,
        schedule="constant" if config.schedule == "constant" else "cosine",
    )


class Trainer:
    """Train one classifier under one :class:`TrainConfig`.

    Args:
        model: an ``nn.Module`` mapping [0, 1] images to logits (a zoo :class:`ImageClassifier`).
        train_set, test_set: datasets of ``(C x H x W float32 in [0, 1], int label)``.
        config: the recipe (a technique's switch already applied; see :func:`train_classifier`).
        technique: the technique's name, recorded in checkpoints.
        on_epoch_end: called as ``on_epoch_end(trainer, epoch, metrics)`` after each epoch's checkpoint is written.
        loss_fn: the step's loss hook, ``loss_fn(trainer, images, labels, generator) -> (loss, logits)``; the
            default is the technique's :func:`training_loss`. A defence or a target recipe plugs its own loss in
            here and keeps the Trainer's resume, AMP, DDP, EMA and schedule. ``logits`` may be None (no
            training accuracy then).
        generator: one run generator that draws every epoch's data order (``randperm``) and is the step's
            generator (augmentation, attacks), in turn; it is saved with the checkpoint. The global torch RNG is
            then left to the caller. Default: per-epoch generators keyed by ``(seed, epoch, rank)``.
        drop_last: drop the last incomplete batch of each epoch (default) or train on it.
        max_steps_per_epoch: cap on the steps of each epoch (quick runs).
        optimizers: ``optimizers(model) -> [optimizer, ...]``, stepped together after one backward. Default: SGD
            (or AdamW) with weight decay on weights only (:func:`_param_groups`).
        schedulers: ``schedulers(trainer) -> [scheduler, ...]`` over ``trainer.optimizers``; each is stepped after
            every batch, except ``ReduceLROnPlateau``, stepped after every epoch with ``epoch_metric``. Default: the
            config's warm-up + cosine (:func:`lr_factor`) per batch.
        prepare: ``prepare(trainer, images, labels, generator) -> (images, labels)`` on the device; default: the
            config's random translation.
        epoch_metric: ``epoch_metric(trainer) -> float`` after each epoch's steps (a validation accuracy): it feeds
            the plateau schedulers and is recorded as the epoch's ``val_metric``.

    Callbacks (as minGPT's): ``trainer.add_callback("on_batch_end", fn)`` calls ``fn(trainer)`` after every
    optimiser step (``trainer.step``, ``trainer.last_loss`` are set); ``"on_epoch_start"`` before each epoch's
    first step; ``"on_epoch_end"`` after each epoch (``trainer.history[-1]`` holds its metrics).

    Example:
        >>> trainer = Trainer(model, train_set, test_set, TrainConfig(epochs=2))   # doctest: +SKIP
        >>> metrics = trainer.fit()                                                # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        test_set: Dataset | None,
        config: TrainConfig,
        technique: str = "standard",
        on_epoch_end: Callable[[Trainer, int, dict[str, Any]], None] | None = None,
        loss_fn: LossFn | None = None,
        *,
        generator: torch.Generator | None = None,
        drop_last: bool = True,
        max_steps_per_epoch: int | None = None,
        optimizers: OptimizerFactory | None = None,
        schedulers: SchedulerFactory | None = None,
        prepare: PrepareFn | None = None,
        epoch_metric: Callable[[Trainer], float] | None = None,
    ) -> None:
        config.validate()
        if len(train_set) == 0:
            raise ValueError("the training set is empty")
        if max_steps_per_epoch is not None and max_steps_per_epoch < 1:
            raise ValueError(f"max_steps_per_epoch must be >= 1, got {max_steps_per_epoch}")
        self.config = config
        self.technique = technique
        self.train_set = train_set
        self.test_set = test_set
        self.on_epoch_end = on_epoch_end
        self.loss_fn: LossFn = loss_fn or _technique_loss
        self.generator = generator
        self.drop_last = drop_last
        self.prepare: PrepareFn = prepare or _translate
        self.epoch_metric = epoch_metric
        self.callbacks: dict[str, list[Callable[[Trainer], None]]] = {event: [] for event in EVENTS}
        self.step = 0
        self.last_loss = float("nan")
        self.rank, self.world_size, self.local_rank = dist_env()
        if generator is not None and self.world_size > 1:
            raise ValueError("a run generator draws one data order for one process; it cannot shard under torchrun")
        self._owns_group = False
        if self.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if resolve_device(config.device).type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
            self._owns_group = True
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        self.raw_model = model.to(self.device)
        self.model: nn.Module = self.raw_model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.raw_model, device_ids=ids)
        self.optimizers = list(optimizers(self.raw_model) if optimizers is not None else [self._make_optimizer()])
        if not self.optimizers:
            raise ValueError("the optimizers factory returned no optimiser")
        self.optimizer = self.optimizers[0]
        shard = self._shard_len()
        steps = max(1, shard // config.batch_size if drop_last else math.ceil(shard / config.batch_size))
        self.steps_per_epoch = min(steps, max_steps_per_epoch) if max_steps_per_epoch else steps
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = int(round(config.warmup_epochs * self.steps_per_epoch))
        self._make_schedulers(schedulers)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ema = ModelEMA(self.raw_model, config.ema_decay) if config.ema_decay > 0 else None
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, Any]] = []

    # ---- set-up ---------------------------------------------------------------------------------------------------
    def add_callback(self, event: str, fn: Callable[[Trainer], None]) -> None:
        """Call ``fn(trainer)`` on ``event`` (``on_epoch_start``, ``on_batch_end`` or ``on_epoch_end``)."""
        if event not in self.callbacks:
            raise ValueError(f"unknown event {event!r}; events: {', '.join(self.callbacks)}")
        self.callbacks[event].append(fn)

    def trigger(self, event: str) -> None:
        """Run the callbacks registered for ``event``."""
        for fn in self.callbacks[event]:
            fn(self)

    def _make_schedulers(self, factory: SchedulerFactory | None) -> None:
        """The schedulers: ``factory(self)``, or the config's warm-up + cosine; split into per batch / per epoch."""
        c = self.config
        if factory is None:
            total, warmup = self.total_steps, self.warmup_steps
            self.schedulers = [
                torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, total, warmup, c))
            ]
        else:
            self.schedulers = list(factory(self))
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
        self._batch_schedulers = [s for s in self.schedulers if not isinstance(s, plateau)]
        self._epoch_schedulers = [s for s in self.schedulers if isinstance(s, plateau)]
        if self._epoch_schedulers and self.epoch_metric is None:
            raise ValueError("a ReduceLROnPlateau schedule needs an epoch_metric (a validation score)")

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        groups = _param_groups(self.raw_model, c.weight_decay)
        if c.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=c.lr, betas=(c.momentum, 0.999))
        return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov and c.momentum > 0)

    def _shard_len(self) -> int:
        n = len(self.train_set)
        return math.ceil(n / self.world_size)

    def _epoch_order(self, epoch: int) -> list[int]:
        """This process's sample indices for ``epoch``: a seeded permutation (sharded under DDP)."""
        if self.generator is not None:
            return torch.randperm(len(self.train_set), generator=self.generator).tolist()
        if self.world_size > 1:
            sampler = DistributedSampler(
                self.train_set, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=self.config.seed
            )
            sampler.set_epoch(epoch)
            return list(iter(sampler))
        g = make_generator(self.config.seed, "order", epoch)
        return torch.randperm(len(self.train_set), generator=g).tolist()

    def _batches(self, dataset: Dataset, order: list[int], batch_size: int, drop_last: bool):
        """Yield ``(images, labels)`` batches in ``order``; in-memory sets are indexed directly."""
        if hasattr(dataset, "images") and hasattr(dataset, "labels"):
            images, labels = dataset.images, dataset.labels
            stop = len(order) - (len(order) % batch_size if drop_last and len(order) >= batch_size else 0)
            for i in range(0, stop, batch_size):
                idx = torch.as_tensor(order[i : i + batch_size])
                yield images[idx], labels[idx]
            return
        loader = DataLoader(
            Subset(dataset, order),
            batch_size=batch_size,
            shuffle=False,
            drop_last=drop_last and len(order) >= batch_size,
            num_workers=self.config.workers,
        )
        yield from loader

    def _autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    # ---- checkpoints ----------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return Path(self.config.checkpoint_dir) / CHECKPOINT_NAME if self.config.checkpoint_dir else None

    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "epoch": self.epoch,
            "technique": self.technique,
            "config": self.config.to_dict(),
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizers[0].state_dict(),
            "scheduler": self.schedulers[0].state_dict() if self.schedulers else None,
            "extra_optimizers": [o.state_dict() for o in self.optimizers[1:]],
            "extra_schedulers": [s.state_dict() for s in self.schedulers[1:]],
            "generator": self.generator.get_state() if self.generator is not None else None,
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng,
            "history": self.history,
        }

    def save(self) -> None:
        """Write ``checkpoint_dir/last.pt`` atomically (rank 0 only)."""
        path = self.checkpoint_path
        if path is None or not is_main_process():
            return
        atomic_torch_save(self.state_dict(), path)
        self.config.to_yaml(path.parent / "config.yaml")

    def load(self, path: str | Path) -> None:
        """Restore everything :meth:`state_dict` saved; the recipe must match the current one."""
        path = Path(path)
        from robustvision.models.checkpoints import torch_load_trusted

        state = torch_load_trusted(path, what="training checkpoint")
        saved = TrainConfig.from_dict(state["config"]).recipe_dict()
        current = self.config.recipe_dict()
        diff = sorted(k for k in current if saved.get(k) != current[k])
        if diff or state.get("technique") != self.technique:
            what = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in diff) or "technique"
            raise ValueError(f"cannot resume from {str(path)!r}: it was trained with a different recipe ({what})")
        self.raw_model.load_state_dict(state["model"])
        opt_states = [state["optimizer"], *state.get("extra_optimizers", [])]
        sched_states = [s for s in [state["scheduler"], *state.get("extra_schedulers", [])] if s is not None]
        for opt, opt_state in zip(self.optimizers, opt_states, strict=True):
            opt.load_state_dict(opt_state)
        for sched, sched_state in zip(self.schedulers, sched_states, strict=True):
            sched.load_state_dict(sched_state)
        if self.generator is not None and state.get("generator") is not None:
            self.generator.set_state(state["generator"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(_as_tuple(state["rng"]["python"]))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.step = self.epoch * self.steps_per_epoch

    # ---- training -------------------------------------------------------------------------------------------------
    @property
    def eval_model(self) -> nn.Module:
        """The weights evaluation and the final checkpoint use: the EMA when it is on."""
        return self.ema.module if self.ema is not None else self.raw_model

    def fit(self) -> dict[str, Any]:
        """Train for the remaining epochs and return the final metrics (see :func:`train_classifier`)."""
        c = self.config
        start = time.perf_counter()
        if c.resume and self.checkpoint_path is not None and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)
        cudnn = torch.backends.cudnn
        saved_flags = (cudnn.deterministic, cudnn.benchmark)
        cudnn.deterministic, cudnn.benchmark = c.deterministic, not c.deterministic
        progress = progress_bar(enabled=c.progress and is_main_process())
        try:
            with progress:
                task = progress.add_task(
                    "train", total=self.total_steps, completed=self.epoch * self.steps_per_epoch, info=""
                )
                while self.epoch < c.epochs:
                    self.trigger("on_epoch_start")
                    metrics = self._train_epoch(self.epoch, progress, task)
                    if self.epoch_metric is not None:
                        metrics["val_metric"] = float(self.epoch_metric(self))
                        for sched in self._epoch_schedulers:
                            sched.step(metrics["val_metric"])
                    last = self.epoch + 1 == c.epochs
                    if self.test_set is not None and (last or (c.eval_every and (self.epoch + 1) % c.eval_every == 0)):
                        metrics.update(self.evaluate())
                    self.epoch += 1
                    metrics["epoch"] = self.epoch
                    self.history.append(metrics)
                    self.save()
                    if self.world_size > 1:
                        dist.barrier()
                    if "test_accuracy" in metrics:
                        info = f"loss {metrics['train_loss']:.3f} test acc {metrics['test_accuracy']:.3f}"
                    else:
                        info = f"loss {metrics['train_loss']:.3f}"
                    progress.update(task, info=info)
                    if self.on_epoch_end is not None:
                        self.on_epoch_end(self, self.epoch, metrics)
                    self.trigger("on_epoch_end")
        finally:
            cudnn.deterministic, cudnn.benchmark = saved_flags
        final = dict(self.history[-1]) if self.history else {}
        if self.test_set is not None and "test_accuracy" not in final:
            final.update(self.evaluate())
        return {
            "technique": self.technique,
            "clean_accuracy": final.get("test_accuracy"),
            "test_loss": final.get("test_loss"),
            "train_loss": final.get("train_loss"),
            "train_accuracy": final.get("train_accuracy"),
            "epochs": self.epoch,
            "steps": self.epoch * self.steps_per_epoch,
            "world_size": self.world_size,
            "seconds": time.perf_counter() - start,
            "history": self.history,
        }

    def _epoch_generator(self, epoch: int) -> torch.Generator:
        """The generator of ``epoch``'s steps: the run generator, or one keyed by ``(seed, epoch, rank)``."""
        if self.generator is not None:
            return self.generator
        c = self.config
        # Dropout / drop-path draw from the global RNG: reseed it per (epoch, rank) so a resumed run replays it.
        torch.manual_seed(seed_from_key(c.seed, "torch", epoch, self.rank))
        return make_generator(c.seed, "augment", epoch, self.rank)

    def _optimise(self, loss: torch.Tensor) -> None:
        """One backward of ``loss``, then every optimiser, the per-batch schedulers and the EMA step."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            for opt in self.optimizers:
                self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.config.grad_clip)
        for opt in self.optimizers:
            self.scaler.step(opt)
        self.scaler.update()
        for sched in self._batch_schedulers:
            sched.step()
        if self.ema is not None:
            self.ema.update(self.raw_model)

    def _train_epoch(self, epoch: int, progress, task) -> dict[str, Any]:
        c = self.config
        generator = self._epoch_generator(epoch)
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = 0
        for step, (images, labels) in enumerate(
            self._batches(self.train_set, self._epoch_order(epoch), c.batch_size, self.drop_last)
        ):
            if step >= self.steps_per_epoch:
                break  # DDP: every rank takes the same number of steps
            images, labels = self.prepare(self, images, labels, generator)
            loss, logits = self.loss_fn(self, images, labels, generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; lower --lr"
                )
            self._optimise(loss)
            self.step += 1
            self.last_loss = float(loss.detach())
            self.trigger("on_batch_end")
            loss_sum += loss.detach() * labels.shape[0]
            if logits is not None:
                correct += (logits.detach().argmax(1) == labels).sum()
            seen += labels.shape[0]
            progress.update(task, advance=1, description=f"epoch {epoch + 1}/{c.epochs}")
        stats = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=self.device)])
        if self.world_size > 1:
            dist.all_reduce(stats)
        return {
            "train_loss": float(stats[0] / stats[2].clamp_min(1)),
            "train_accuracy": float(stats[1] / stats[2].clamp_min(1)),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
        }

    @torch.no_grad()
    def evaluate(self, dataset: Dataset | None = None) -> dict[str, float]:
        """Clean accuracy and loss of :attr:`eval_model` on ``dataset`` (the test set by default), all ranks."""
        dataset = dataset if dataset is not None else self.test_set
        if dataset is None or len(dataset) == 0:
            raise ValueError("evaluate() needs a non-empty test set")
        model = self.eval_model
        was_training = model.training
        model.eval()
        order = list(range(self.rank, len(dataset), self.world_size))
        stats = torch.zeros(3, device=self.device)
        try:
            for images, labels in self._batches(dataset, order, self.config.eval_batch_size, False):
                images, labels = images.to(self.device), labels.to(self.device)
                with self._autocast():
                    logits = model(images).float()
                stats[0] += F.cross_entropy(logits, labels, reduction="sum")
                stats[1] += (logits.argmax(1) == labels).sum()
                stats[2] += labels.shape[0]
        finally:
            model.train(was_training)
        if self.world_size > 1:
            dist.all_reduce(stats)
        return {"test_loss": float(stats[0] / stats[2]), "test_accuracy": float(stats[1] / stats[2])}

    def close(self) -> None:
        """Leave the process group if this Trainer joined it."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


def _translate(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
    """The default ``prepare``: the config's random translation, then the batch moves to the device."""
    images = random_translate(images, trainer.config.translate, generator).to(trainer.device, non_blocking=True)
    return images, labels.to(trainer.device, non_blocking=True)


def _technique_loss(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
    """The default ``loss_fn``: the technique's :func:`training_loss` under the config."""
    return training_loss(trainer.model, trainer.raw_model, images, labels, trainer.config, generator, trainer._autocast)


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` needs tuples where a round trip may have produced lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value
