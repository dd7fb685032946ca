"""Zoo presets: named sets of (architecture, technique) trained on one data set and cached under ROBUSTVISION_HOME.

The ``default`` preset is what ``robustvision bench`` evaluates with no arguments. It must train from scratch in
under 10 minutes on 2 CPU cores, so every architecture is a light variant (its constructor overrides are recorded
in the model card's ``model_kwargs``) and every member reaches >= 90% clean accuracy on ``digits``.

A trained member is cached as ``$ROBUSTVISION_HOME/zoo/<dataset>/<model>__<technique>__<key>.safetensors`` (plus
its JSON card), where ``key`` hashes everything that changes the weights (data set, image size, architecture and
its arguments, technique, resolved recipe). A run that is interrupted mid-member resumes from that member's
per-epoch checkpoint under ``zoo/.work/<key>/``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from robustvision.registry import Registry
from robustvision.runtime import home_dir
from robustvision.training.config import TrainConfig
from robustvision.training.progress import progress_bar
from robustvision.training.techniques import create_technique

ZOO_CACHE_VERSION = 1  # bump when a change of code (not of config) changes the trained weights


@dataclass(frozen=True)
class ZooMember:
    """One model of a preset.

    Attributes:
        model: zoo architecture name.
        technique: training technique.
        model_kwargs: constructor overrides (light variants).
        overrides: config fields set on top of the preset's base recipe and the technique (e.g. epochs).
    """

    model: str
    technique: str = "standard"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.technique}"


@dataclass(frozen=True)
class ZooPreset:
    """A named set of members trained on ``dataset`` with the base recipe ``base``."""

    name: str
    dataset: str
    members: tuple[ZooMember, ...]
    base: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    min_accuracy: float = 0.9
    description: str = ""

    def base_config(self) -> TrainConfig:
        return TrainConfig(**self.base)


class ZooCheckpoint(NamedTuple):
    """A trained member: ``(model_name, technique, checkpoint_path)``."""

    model_name: str
    technique: str
    checkpoint_path: Path


PRESETS: Registry[ZooPreset] = Registry("zoo preset")

_VIT = {"depth": 4, "embed_dim": 96, "num_heads": 3, "patch_size": 8}
_MLP = {"num_blocks": 4, "embed_dim": 128, "patch_size": 8}
# Transformers train poorly from scratch under SGD on 1,347 images (90.2% after 30 epochs, measured), so their
# base recipe is AdamW, as DeiT trains them; the card's config records it.
_ADAMW = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05}

DEFAULT_PRESET = ZooPreset(
    name="default",
    dataset="digits",
    description="9 light models (3 families) and 3 technique variants of LeNet-5 on digits; CPU-sized",
    base={"epochs": 15, "batch_size": 64, "lr": 0.05, "eval_every": 0, "progress": False},
    members=(
        ZooMember("lenet5"),
        ZooMember("lenet5", "pgd_at"),
        ZooMember("lenet5", "trades"),
        ZooMember("lenet5", "mixup"),
        ZooMember("resnet18", model_kwargs={"channels": (16, 32, 64, 128)}, overrides={"epochs": 12}),
        ZooMember("vit_tiny", model_kwargs=_VIT, overrides={"epochs": 30, **_ADAMW}),
        ZooMember("deit_tiny", model_kwargs=_VIT, overrides={"epochs": 30, **_ADAMW}),
        ZooMember("mixer_tiny", model_kwargs=_MLP, overrides={"epochs": 20}),
        ZooMember("gmlp_tiny", model_kwargs=_MLP, overrides={"epochs": 20}),
    ),
)
PRESETS.add("default", lambda: DEFAULT_PRESET, description=DEFAULT_PRESET.description)


def get_preset(name: str) -> ZooPreset:
    """The preset registered as ``name`` (unknown names suggest close ones)."""
    return PRESETS.create(name)


def list_presets() -> list[str]:
    return PRESETS.list()


def member_config(preset: ZooPreset, member: ZooMember) -> TrainConfig:
    """The resolved recipe of ``member``: base, then the technique's switch, then the member's overrides."""
    config = create_technique(member.technique).apply(preset.base_config())
    return config.replace(**member.overrides) if member.overrides else config


def member_key(preset: ZooPreset, member: ZooMember) -> str:
    """Hash of everything that changes the member's weights."""
    tech = create_technique(member.technique)
    payload = {
        "cache_version": ZOO_CACHE_VERSION,
        "dataset": preset.dataset,
        "image_size": preset.image_size,
        "model": member.model,
        "model_kwargs": {**member.model_kwargs, **tech.model_kwargs},
        "technique": member.technique,
        "recipe": member_config(preset, member).recipe_dict(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def zoo_dir(preset: ZooPreset) -> Path:
    return home_dir() / "zoo" / preset.dataset


def member_path(preset: ZooPreset, member: ZooMember) -> Path:
    return zoo_dir(preset) / f"{member.model}__{member.technique}__{member_key(preset, member)}.safetensors"


def is_cached(preset: ZooPreset, member: ZooMember) -> bool:
    path = member_path(preset, member)
    return path.is_file() and path.with_suffix(".json").is_file()


def ensure_zoo(
    preset: str | ZooPreset = "default",
    device: str = "auto",
    progress: bool = True,
    retrain: bool = False,
    only: list[str] | None = None,
    jobs: int | None = None,
) -> list[ZooCheckpoint]:
    """Train the members of ``preset`` that are not cached yet and return every member's checkpoint.

    Args:
        preset: a preset name (``default``) or a :class:`ZooPreset`.
        device: ``auto``, ``cpu`` or ``cuda``: where missing members train (cached ones are reused as they are).
        progress: show a rich progress bar.
        retrain: train every member again, replacing the cache.
        only: restrict to members whose model name or ``model/technique`` label is listed.
        jobs: train this many members at once in worker processes with one CPU thread each (on CPU, small
            models scale far better across processes than across threads); None: 2 on a CPU with 2+ cores,
            1 on CUDA.

    Returns:
        ``[(model_name, technique, checkpoint_path), ...]`` in preset order.

    Example:
        >>> for name, technique, path in ensure_zoo("default"):   # doctest: +SKIP
        ...     model, card = load_checkpoint(path)
    """
    spec = preset if isinstance(preset, ZooPreset) else get_preset(preset)
    if jobs is None:
        import os

        from robustvision.runtime import resolve_device

        jobs = 1 if resolve_device(device).type == "cuda" else max(1, min(2, os.cpu_count() or 1))
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    members = list(spec.members)
    if only:
        members = [m for m in members if m.model in only or m.label in only]
        if not members:
            known = sorted({m.label for m in spec.members})
            raise ValueError(f"--only {only} matches no member of preset {spec.name!r} (members: {known})")
    todo = [m for m in members if retrain or not is_cached(spec, m)]
    runtime = {"device": device, "resume": not retrain, "progress": False}
    if retrain:
        for member in todo:
            shutil.rmtree(_work_dir(spec, member), ignore_errors=True)
    bar = progress_bar(enabled=progress and bool(todo))
    with bar:
        if jobs > 1 and len(todo) > 1:
            _train_parallel(spec, todo, runtime, jobs, bar)
        else:
            task = bar.add_task("zoo", total=sum(member_config(spec, m).epochs for m in todo), info="")
            for member in todo:
                bar.update(task, description=f"zoo {member.label}", advance=_epochs_done(_work_dir(spec, member)))

                def on_epoch_end(trainer, epoch, metrics, _task=task):
                    bar.update(_task, advance=1, info=f"epoch {epoch}/{trainer.config.epochs}")

                _finish(spec, member, _train_member(spec, member, runtime, on_epoch_end))
    return [ZooCheckpoint(m.model, m.technique, member_path(spec, m)) for m in members]


def _train_parallel(spec: ZooPreset, todo: list[ZooMember], runtime: dict, jobs: int, bar) -> None:
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from robustvision.runtime import exit_with_parent

    task = bar.add_task("zoo", total=len(todo), info=f"{jobs} workers")
    single = {**runtime, "threads": 1}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, ctx, initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_train_member, spec, m, single, None): m for m in todo}
        for future in as_completed(futures):
            member = futures[future]
            _finish(spec, member, future.result())
            bar.update(task, advance=1, description=f"zoo {member.label} done")


def _finish(spec: ZooPreset, member: ZooMember, metrics: dict[str, Any]) -> None:
    acc = metrics.get("clean_accuracy") or 0.0
    if acc < spec.min_accuracy:
        warnings.warn(
            f"zoo member {member.label} reached {acc:.3f} clean accuracy, below the preset's {spec.min_accuracy:.2f}",
            stacklevel=3,
        )
    shutil.rmtree(_work_dir(spec, member), ignore_errors=True)


def _work_dir(spec: ZooPreset, member: ZooMember) -> Path:
    return zoo_dir(spec).parent / ".work" / member_key(spec, member)


def _train_member(spec: ZooPreset, member: ZooMember, runtime: dict[str, Any], on_epoch_end) -> dict[str, Any]:
    """Build ``member`` (seeded) and train it with the preset's base recipe, its technique and its overrides."""
    from robustvision.data import create_dataset
    from robustvision.models import create_model
    from robustvision.runtime import seeded
    from robustvision.training.api import train_classifier

    config = spec.base_config().replace(checkpoint_dir=str(_work_dir(spec, member)), **runtime)
    tech = create_technique(member.technique)
    train_set = create_dataset(spec.dataset, split="train", image_size=spec.image_size)
    test_set = create_dataset(spec.dataset, split="test", image_size=spec.image_size)
    kwargs = {**member.model_kwargs, **tech.model_kwargs}
    with seeded(config.seed):  # the caller's random state comes back afterwards
        model = create_model(
            member.model,
            num_classes=train_set.num_classes,
            image_size=train_set.image_size,
            in_chans=train_set.channels,
            **kwargs,
        )
        card = {
            "dataset": spec.dataset,
            "model_kwargs": kwargs,
            "zoo_preset": spec.name,
            "zoo_key": member_key(spec, member),
        }
        return train_classifier(
            model,
            train_set,
            test_set,
            config,
            member.technique,
            overrides=member.overrides,
            save_to=member_path(spec, member),
            card=card,
            on_epoch_end=on_epoch_end,
        )


def _epochs_done(work: Path) -> int:
    import torch

    path = work / "last.pt"
    if not path.is_file():
        return 0
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # an unreadable partial checkpoint only affects the progress bar; the Trainer reports it
        return 0
