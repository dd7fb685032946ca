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
from robustvision.fileio import atomic_write_text, replace_keeping_mode
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
        replace_keeping_mode(tmp, path)
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


def torch_load_trusted(path: str | Path, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(..., weights_only=True)`` with one-line errors.

    A file that holds pickled Python objects beyond tensors and plain containers is refused (never run) with
    "not a trusted checkpoint"; an empty, truncated or foreign file is "unreadable or corrupt".

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is refused or unreadable (the message names it).
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{what} {str(path)!r} is not a trusted checkpoint: it holds Python objects that weights-only loading "
            "refuses to run"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{what} {str(path)!r} is unreadable or corrupt: {first}") from None


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from safetensors, or from a ``torch.save`` file with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    if path.suffix != ".safetensors":
        state = torch_load_trusted(path)
    else:
        try:
            return load_file(str(path))
        except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as err:
            raise ValueError(f"checkpoint {str(path)!r} is unreadable or corrupt: {err}") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {str(path)!r} does not hold a state dict")
    return state


def check_finite_state(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``ValueError`` naming the first tensor with NaN or infinite values (such weights give meaningless numbers)."""
    for key, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"checkpoint {str(path)!r} has NaN or infinite weights (first in {key!r}); retrain it")


def model_from_card(card: dict[str, Any], path: str | Path, **model_kwargs: Any) -> ImageClassifier:
    """The untrained zoo model a classifier card describes (``arch``, ``num_classes``, ``image_size``, ...).

    Raises:
        ValueError: the card lacks one of the keys every classifier card has.
    """
    from robustvision.models.zoo import create_model

    missing_keys = [k for k in ("arch", "num_classes", "image_size") if k not in card]
    if missing_keys:
        raise ValueError(f"model card of {str(path)!r} lacks {', '.join(missing_keys)}")
    return create_model(
        card["arch"],
        num_classes=card["num_classes"],
        image_size=card["image_size"],
        in_chans=card.get("in_chans", 3),
        mean=card.get("mean"),
        std=card.get("std"),
        **{**card.get("model_kwargs", {}), **model_kwargs},
    )


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", **model_kwargs: Any
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Rebuild the zoo model named by the card beside ``path`` and load its weights (eval mode).

    Returns:
        ``(model, card)``.
    """
    card = read_card(path)
    state = load_state(path)
    check_finite_state(state, path)
    model = model_from_card(card, path, **model_kwargs)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that differ: "size mismatch for conv1.weight: ..."
        detail = next((ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln), str(err).splitlines()[0])
        raise ValueError(
            f"checkpoint {str(path)!r} does not match architecture {card['arch']!r} of its card: {detail}"
        ) from None
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match architecture {card['arch']!r}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected tensors (e.g. {(missing + unexpected)[:3]})"
        )
    return model.to(device).eval(), card
