"""The two entry points: :func:`train_classifier` (a built model) and :func:`train_model` (a zoo name + data set)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from robustvision.runtime import seeded
from robustvision.training.config import TrainConfig
from robustvision.training.techniques import check_model_for_technique, create_technique
from robustvision.training.trainer import Trainer, is_main_process


def train_classifier(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset | None,
    config: TrainConfig | None = None,
    technique: str = "standard",
    *,
    overrides: dict[str, Any] | None = None,
    save_to: str | Path | None = None,
    card: dict[str, Any] | None = None,
    on_epoch_end: Callable[..., None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` with the base recipe ``config`` switched by ``technique``.

    Args:
        model: a classifier taking [0, 1] images (build it after seeding for reproducible initial weights).
        train_set, test_set: classification datasets (``test_set`` may be None: no evaluation).
        config: the base recipe (defaults: :class:`TrainConfig`).
        technique: a name from :data:`TECHNIQUES` (``standard``, ``pgd_at``, ``trades``, ``mixup``, ...).
        overrides: config fields set after the technique (to tune the technique's own numbers).
        save_to: write the final model (EMA weights when on) there as safetensors + JSON model card (rank 0).
        card: extra model-card fields (``model_kwargs`` the model was built with, ...).
        on_epoch_end: ``callback(trainer, epoch, metrics)`` after each epoch's checkpoint.

    Returns:
        Metrics: ``clean_accuracy`` (test), ``test_loss``, ``train_loss``, ``train_accuracy``, ``epochs``,
        ``steps``, ``seconds``, ``technique``, ``config`` (resolved, as a dict), ``history`` (per epoch) and
        ``checkpoint`` (the saved path or None).

    Example:
        >>> from robustvision.data import create_dataset
        >>> from robustvision.models import create_model
        >>> train, test = create_dataset("digits"), create_dataset("digits", split="test")
        >>> model = create_model("lenet5", image_size=32)
        >>> metrics = train_classifier(model, train, test, TrainConfig(epochs=3), "mixup")  # doctest: +SKIP
    """
    tech = create_technique(technique)
    resolved = tech.apply(config or TrainConfig())
    if overrides:
        resolved = resolved.replace(**overrides)
    check_model_for_technique(model, tech)
    trainer = Trainer(model, train_set, test_set, resolved, technique=tech.name, on_epoch_end=on_epoch_end)
    try:
        metrics = trainer.fit()
        metrics["config"] = resolved.to_dict()
        metrics["checkpoint"] = None
        if save_to is not None and is_main_process():
            from robustvision.models.checkpoints import save_checkpoint

            model_card = {
                "technique": tech.name,
                "dataset": getattr(train_set, "name", type(train_set).__name__),
                "clean_accuracy": metrics["clean_accuracy"],
                "test_loss": metrics["test_loss"],
                "train_accuracy": metrics["train_accuracy"],
                "epochs": metrics["epochs"],
                "train_seconds": round(metrics["seconds"], 2),
                "world_size": metrics["world_size"],
                "recipe_hash": resolved.recipe_hash(),
                "config": resolved.to_dict(),
                "model_kwargs": {},
                **(card or {}),
            }
            metrics["checkpoint"] = str(save_checkpoint(trainer.eval_model, save_to, model_card))
    finally:
        trainer.close()
    return metrics


def train_model(
    model_name: str,
    dataset: str = "digits",
    technique: str = "standard",
    config: TrainConfig | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    root: str | Path | None = None,
    image_size: int | None = None,
    save_to: str | Path | None = None,
    train_subset: int | None = None,
) -> dict[str, Any]:
    """Build the zoo model ``model_name`` for ``dataset`` (seeded) and train it with ``technique``.

    The technique's own constructor arguments (``drop_path_rate`` for ``drop_path``) are merged into
    ``model_kwargs`` and recorded in the model card so :func:`~robustvision.models.checkpoints.load_checkpoint`
    rebuilds the same network.

    Args:
        model_name: a zoo name (``robustvision zoo list``).
        dataset: a data set name (``robustvision data list``); root: its folder when it needs one.
        image_size: resize the data to this side (the data set's native size by default).
        train_subset: train on the first N images of a seeded permutation (quick runs and tests).
        Other arguments as :func:`train_classifier`.
    """
    from robustvision.data import create_dataset
    from robustvision.models import create_model
    from robustvision.runtime import make_generator

    tech = create_technique(technique)
    base = config or TrainConfig()
    seed = (overrides or {}).get("seed", base.seed)
    train_set = create_dataset(dataset, split="train", root=root, image_size=image_size)
    test_set = create_dataset(dataset, split="test", root=root, image_size=image_size)
    if train_subset is not None:
        if not hasattr(train_set, "subset"):
            raise ValueError(f"data set {dataset!r} does not support --subset")
        perm = torch.randperm(len(train_set), generator=make_generator(seed, "subset"))
        train_set = train_set.subset(perm[: max(1, train_subset)])
    kwargs = {**(model_kwargs or {}), **tech.model_kwargs}
    with seeded(seed):  # the caller's random state comes back afterwards
        try:
            model = create_model(
                model_name,
                num_classes=train_set.num_classes,
                image_size=train_set.image_size,
                in_chans=train_set.channels,
                **kwargs,
            )
        except TypeError as err:
            if not tech.model_kwargs:
                raise
            raise ValueError(
                f"technique {technique!r} builds the model with {tech.model_kwargs}, which {model_name!r} does not "
                f"accept ({err}); pick an architecture with stochastic depth (resnet18, vit_tiny, mixer_tiny, ...)"
            ) from err
        card = {"dataset": dataset, "model_kwargs": kwargs}
        return train_classifier(
            model, train_set, test_set, base, technique, overrides=overrides, save_to=save_to, card=card
        )
