"""Devices, seeds and the cache folder: the few process-level facts every module agrees on."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without CUDA is a clear error."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from err


def seed_from_key(seed: int, *parts: object) -> int:
    """A stable 63-bit seed from a base seed and a cell key (same key -> same seed, in any process)."""
    text = "|".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int, *parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded from ``seed`` and an optional key."""
    g = torch.Generator(device=device)
    g.manual_seed(seed_from_key(seed, *parts) if parts else seed)
    return g


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch for a whole training run (called by entry points, never at import)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with Python, NumPy and torch seeded from ``seed``; the caller's random state comes back after.

    Weight initialisation and other library code draw from the global generators, which cannot be handed a
    ``torch.Generator``; this scopes the seeding to the block instead of changing the process's state for good.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        seed_everything(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def require_extra(module: str, extra: str) -> Any:
    """Import ``module``, which the base install leaves to the extra ``extra``; a missing one is one clear error.

    Args:
        module: the module to import (``"trimesh"``, ``"fastapi"``, ``"pycocotools.mask"``).
        extra: the pyproject extra that installs it (``"physical"``, ``"app"``, ``"bench"``).

    Returns:
        The imported module.

    Raises:
        MissingExtraError: (a ``ModuleNotFoundError``) the module is not installed; the message names the
            ``pip install`` to run, and the CLI prints it as one line.

    Example:
        >>> np_module = require_extra("numpy", "bench")
    """
    import importlib

    from robustvision.errors import MissingExtraError

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise MissingExtraError(
            f"{module.split('.')[0]} is not installed; it comes with the {extra!r} extra: "
            f"pip install 'robustvision[{extra}]'"
        ) from err


def git_commit() -> str | None:
    """The git commit of the package's checkout, or None outside a checkout (recorded in cards and runs)."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def home_dir() -> Path:
    """The cache folder for checkpoints and downloads: ``$ROBUSTVISION_HOME`` or ``~/.cache/robustvision``."""
    root = os.environ.get("ROBUSTVISION_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "robustvision")
    return Path(root)


def shared_data_dir() -> Path | None:
    """``$ROBUSTVISION_SHARED_DATA`` or the ``../shared/data`` beside the project checkout, if present.

    A non-empty ``$ROBUSTVISION_SHARED_DATA`` is authoritative: when it names no folder (``none``, say) the shared
    data counts as absent, which is how a run without ``../shared`` is simulated on a machine that has it.
    """
    env = os.environ.get("ROBUSTVISION_SHARED_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    here = Path(__file__).resolve().parent.parent
    candidates = [here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Make this worker process exit as soon as ``parent_pid`` is no longer its parent.

    The parent may have died in any way, even by SIGKILL. Call it from a process-pool initializer: orphaned pool
    workers otherwise finish their task and then wait for work forever.
    """
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
