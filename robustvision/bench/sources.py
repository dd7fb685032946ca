"""Where the benchmarked models come from: checkpoint files (with their model cards) or the default zoo.

A checkpoint is a safetensors file with a JSON model card beside it (``robustvision.models.checkpoints``). The card
names the architecture (``arch``), the family and the training ``technique``; the bench identifies a model variant
by ``arch/technique`` and a checkpoint by the SHA-256 of its weights, so retraining a model makes new cells while
re-running the same checkpoint resumes.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from robustvision.bench.plan import BenchConfig, ModelEntry
from robustvision.models.checkpoints import load_checkpoint, read_card

_HASHES: dict[tuple[str, float, int], str] = {}


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file (cached by path, mtime and size)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime, st.st_size)
    if key not in _HASHES:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def entry_from_checkpoint(path: str | Path) -> ModelEntry:
    """A :class:`ModelEntry` from a checkpoint and its card (clear errors for a missing or bad card)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    card = read_card(path)
    if "arch" not in card:
        raise ValueError(f"model card beside {str(path)!r} has no 'arch'")
    load_checkpoint(path)  # weights that do not fit the card, or are NaN, fail here, before any cell runs
    name = str(card.get("name") or card["arch"])
    return ModelEntry(
        name=name,
        technique=str(card.get("technique") or "standard"),
        family=str(card.get("family") or ""),
        checkpoint=str(path.resolve()),
        checkpoint_hash=file_hash(path),
    )


def entries_from_paths(paths: Iterable[str | Path]) -> list[ModelEntry]:
    """Entries for checkpoint files and for every ``*.safetensors`` (with a card) under given folders."""
    out: list[ModelEntry] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*.safetensors") if f.with_suffix(".json").is_file())
            if not files:
                raise FileNotFoundError(f"no checkpoints (*.safetensors with a .json card) under {str(p)!r}")
            out.extend(entry_from_checkpoint(f) for f in files)
        else:
            out.append(entry_from_checkpoint(p))
    seen: dict[str, ModelEntry] = {}
    for e in out:
        if e.key in seen and seen[e.key].checkpoint_hash != e.checkpoint_hash:
            raise ValueError(f"two different checkpoints claim {e.key!r}: {seen[e.key].checkpoint} and {e.checkpoint}")
        seen.setdefault(e.key, e)
    return list(seen.values())


def _zoo_items(result: Any) -> list[tuple[Path, str | None, str | None]]:
    """``(checkpoint, model name, technique)`` from what ``ensure_zoo`` returns: ``ZooCheckpoint`` tuples
    ``(model_name, technique, checkpoint_path)``, plain paths, or objects/dicts with a checkpoint path."""
    if isinstance(result, dict):
        result = list(result.values())
    items: list[tuple[Path, str | None, str | None]] = []
    for item in result:
        if isinstance(item, (str, Path)):
            items.append((Path(item), None, None))
            continue
        get = item.get if isinstance(item, dict) else lambda k, _i=item: getattr(_i, k, None)
        path = get("checkpoint_path") or get("checkpoint") or get("path")
        if not path:
            raise TypeError(f"ensure_zoo returned an entry without a checkpoint path: {item!r}")
        items.append((Path(path), get("model_name"), get("technique")))
    return items


def zoo_entries(cfg: BenchConfig, log: Callable[[str], None] = print) -> list[ModelEntry]:
    """Train or reuse the default zoo (``robustvision.training.ensure_zoo``) and list its checkpoints."""
    from robustvision.training import ensure_zoo, get_preset

    only = None
    if cfg.models or cfg.techniques:  # train only the members asked for; unknown names suggest close ones
        preset = get_preset(cfg.zoo_preset)
        members = [SimpleNamespace(name=m.model, key=m.label, technique=m.technique) for m in preset.members]
        only = [m.key for m in select_models(members, cfg.models, cfg.techniques)]
        if not only:
            return []
    out = []
    for path, name, technique in _zoo_items(ensure_zoo(cfg.zoo_preset, device=cfg.device, only=only)):
        entry = entry_from_checkpoint(path)
        out.append(replace(entry, name=name or entry.name, technique=technique or entry.technique))
    return out


def select_models(entries: list[ModelEntry], models: list[str], techniques: list[str]) -> list[ModelEntry]:
    """Keep the entries named by ``models`` (``name`` or ``name/technique``) and ``techniques``; unknown names
    are an error that suggests the close ones."""
    names = sorted({e.name for e in entries} | {e.key for e in entries})
    for m in models:
        if m not in names:
            close = difflib.get_close_matches(m, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"unknown model {m!r} among the benchmarked checkpoints{hint} (have: {', '.join(names)})")
    known_t = sorted({e.technique for e in entries})
    for t in techniques:
        if t not in known_t:
            close = difflib.get_close_matches(t, known_t, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"no checkpoint was trained with technique {t!r}{hint} (have: {', '.join(known_t)})")
    out = [e for e in entries if not models or e.name in models or e.key in models]
    return [e for e in out if not techniques or e.technique in techniques]


PRETRAINED_CLASSES = 1000  # ImageNet-1k heads


def pretrained_checkpoint(name: str, image_size: int = 224, log: Callable[[str], None] = print) -> Path:
    """A checkpoint (safetensors + card, in the cache folder) of zoo model ``name`` with its ImageNet weights.

    ``tf_efficientnet_lite0/1/2`` read the weights that ship in a package (no download); any other zoo or
    ``timm:<name>`` model takes the library's pretrained weights (downloads once; needs the network). The
    checkpoint is written once and reused, so the bench identifies its cells by the weights' hash like any other.

    Raises:
        ValueError: the weights cannot be had (offline, unknown name: the message says which).
    """
    from robustvision.models import create_model
    from robustvision.models.checkpoints import save_checkpoint
    from robustvision.models.pretrained import PACKAGED_WEIGHTS
    from robustvision.registry import UnknownNameError
    from robustvision.runtime import home_dir

    safe = name.replace(":", "_").replace("/", "_")
    path = home_dir() / "pretrained" / f"{safe}-{image_size}.safetensors"
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    arch = name.split(":", 1)[1] if name.startswith("timm:") else name
    if not name.startswith("timm:"):
        from robustvision.models import MODELS

        MODELS.get(name)  # an unknown name fails here, with the close ones, before anything is built
    log(f"building {name} with its ImageNet weights ({'packaged' if arch in PACKAGED_WEIGHTS else 'download'})")
    try:
        model = create_model(name, num_classes=PRETRAINED_CLASSES, image_size=image_size, pretrained=True)
    except (UnknownNameError, ModuleNotFoundError, FileNotFoundError):
        raise
    except Exception as err:  # hub / network errors come in many types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"cannot load the pretrained weights of {name!r} (they download from the hub): {first}"
        ) from None
    source = PACKAGED_WEIGHTS[arch].package if arch in PACKAGED_WEIGHTS else f"{name} (library weights)"
    card = {"name": name, "technique": "standard", "dataset": "imagenet", "pretrained": source}
    return save_checkpoint(model.eval(), path, card)


def pretrained_entries(cfg: BenchConfig, log: Callable[[str], None] = print, image_size: int = 224) -> list[ModelEntry]:
    """Entries for ``cfg.models`` built with their ImageNet weights (see :func:`pretrained_checkpoint`)."""
    if not cfg.models:
        raise ValueError("--pretrained needs --models: zoo names (tf_efficientnet_lite0, ...) or timm:<name>")
    names = [m.split("/", 1)[0] for m in cfg.models]
    return [entry_from_checkpoint(pretrained_checkpoint(n, image_size, log)) for n in dict.fromkeys(names)]


def resolve_models(cfg: BenchConfig, log: Callable[[str], None] = print, image_size: int = 224) -> list[ModelEntry]:
    """The model variants a config asks for: its checkpoints and/or pretrained models, or the default zoo;
    filtered by name/technique."""
    if cfg.pretrained:
        entries = pretrained_entries(cfg, log, image_size)
        if cfg.checkpoints:
            entries += entries_from_paths(cfg.checkpoints)
            return select_models(entries, [], cfg.techniques)
    else:
        entries = entries_from_paths(cfg.checkpoints) if cfg.checkpoints else zoo_entries(cfg, log)
    return select_models(entries, cfg.models, cfg.techniques)


def resolve_model_spec(spec: str, *, zoo_preset: str = "default", device: str = "cpu") -> tuple[Any, dict, str]:
    """Load one model named on the command line: a checkpoint path (safetensors + JSON card) or a zoo member
    ``name`` / ``name/technique`` of ``zoo_preset`` (trained first when it is not cached).

    Returns:
        ``(model in eval mode, model card, "name/technique")``.
    """
    from robustvision.models.checkpoints import load_checkpoint

    path = Path(spec)
    if path.suffix in (".safetensors", ".pt", ".pth") or path.is_file():
        entry = entry_from_checkpoint(path)
    else:
        from robustvision.bench.plan import BenchConfig

        cfg = BenchConfig(models=[spec], zoo_preset=zoo_preset, device=device)
        entries = zoo_entries(cfg, log=lambda _msg: None)
        if not entries:
            raise ValueError(f"no zoo member matches {spec!r} in preset {zoo_preset!r}")
        std = [e for e in entries if e.technique == "standard"]
        entry = (std or entries)[0]
    model, card = load_checkpoint(entry.checkpoint, device=device)
    return model, card, entry.key
