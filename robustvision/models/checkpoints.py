"""Checkpoints: safetensors weights plus a JSON model card beside them, one format for every capability.

:func:`save_weights` / :func:`load_weights` write and read any module's weights (classifiers, GBN defences, DAS
targets, EdgeFlow, UDA segmenters): ``NAME.safetensors`` plus ``NAME.json``, both written atomically, the card always
holding the format tag, the package version and the git commit. :func:`save_checkpoint` / :func:`load_checkpoint`
add the zoo classifier's card fields and rebuild it through the zoo factory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import robustvision
from robustvision.fileio import atomic_write_text
from robustvision.models.wrappers import ImageClassifier
from robustvision.runtime import git_commit

CARD_SUFFIX = ".json"
CLASSIFIER_FORMAT = "robustvision.classifier/1"


def card_path(path: str | Path) -> Path:
    """The JSON model card beside a weight file."""
    return Path(path).with_suffix(CARD_SUFFIX)


def save_weights(
    weights: nn.Module | Mapping[str, torch.Tensor], path: str | Path, card: dict[str, Any], *, fmt: str
) -> Path:
    """Write ``weights`` to ``path`` (safetensors) and ``card`` beside it (``.json``), each atomically.

    Args:
        weights: a module (its state dict is saved) or a state dict.
        path: the weight file; it must end in ``.safetensors``.
        card: what to record (architecture, recipe, data, figures); JSON-serialisable (other values are written as
            strings).
        fmt: the format tag, e.g. ``"robustvision.iseg.edgeflow/1"``; :func:`load_weights` can require it.

    Returns:
        ``path``.

    Example:
        >>> save_weights(nn.Linear(2, 2), "/tmp/lin.safetensors", {"arch": "linear"}, fmt="demo/1")  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    full = {
        **card,
        "format": fmt,
        "robustvision_version": robustvision.__version__,
        "git_commit": card.get("git_commit") or git_commit(),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": fmt})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    atomic_write_text(card_path(path), json.dumps(full, indent=2, sort_keys=True, default=str) + "\n")
    return path


def load_weights(path: str | Path, *, fmt: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a weight file and its model card, written by :func:`save_weights`.

    Args:
        path: the ``.safetensors`` file (a ``torch.save`` state dict also loads, with ``weights_only=True``).
        fmt: require this format tag (cards written before tags existed carry none and are accepted).

    Returns:
        ``(state dict, card)``.

    Raises:
        FileNotFoundError: the weights or the card is missing.
        ValueError: the card is not JSON, holds another format, or the weights are unreadable.
    """
    card = read_card(path)
    if fmt is not None and card.get("format", fmt) != fmt:
        raise ValueError(f"{str(path)!r} holds a {card['format']!r} checkpoint, not {fmt!r}")
    return load_state(path), card


def save_checkpoint(model: ImageClassifier, path: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Save ``model``'s weights to ``path`` (safetensors) and its model card to ``path`` with ``.json``.

    The card always records the architecture, family, image size, channels, classes, package version and git
    commit; ``card`` adds the rest (technique, data set, clean accuracy, config...).
    """
    full_card = {
        "arch": model.arch,
        "family": model.family,
        "num_classes": model.num_classes,
        "image_size": model.image_size,
        "in_chans": model.in_chans,
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        **(card or {}),
    }
    return save_weights(model, path, full_card, fmt=CLASSIFIER_FORMAT)


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card beside a checkpoint; a clear error when it is missing or not JSON."""
    cpath = card_path(path)
    if not cpath.is_file():
        raise FileNotFoundError(f"model card {str(cpath)!r} not found beside checkpoint {str(path)!r}")
    try:
        return json.loads(cpath.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"model card {str(cpath)!r} is not valid JSON: {err}") from err


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from safetensors, or from a ``torch.save`` file with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as err:
        raise ValueError(f"checkpoint {str(path)!r} is unreadable or corrupt: {err}") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {str(path)!r} does not hold a state dict")
    return state


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", **model_kwargs: Any
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Rebuild the zoo model named by the card beside ``path`` and load its weights (eval mode).

    Returns:
        ``(model, card)``.
    """
    from robustvision.models.zoo import create_model

    card = read_card(path)
    state = load_state(path)
    kwargs = {**card.get("model_kwargs", {}), **model_kwargs}
    model = create_model(
        card["arch"],
        num_classes=card["num_classes"],
        image_size=card["image_size"],
        in_chans=card.get("in_chans", 3),
        mean=card.get("mean"),
        std=card.get("std"),
        **kwargs,
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match architecture {card['arch']!r}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected tensors (e.g. {(missing + unexpected)[:3]})"
        )
    return model.to(device).eval(), card
