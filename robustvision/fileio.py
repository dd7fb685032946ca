"""Small file helpers shared across the package."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only be read by setting it, racing threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _new_file_mode(path: Path) -> int:
    """The mode the replaced file had, or the one ``open()`` would give a new file (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def replace_keeping_mode(tmp: str | Path, path: str | Path) -> None:
    """``os.replace(tmp, path)`` after giving ``tmp`` the mode ``path`` has (or a new file's usual mode).

    ``tempfile.mkstemp`` makes ``0600`` files; without this an atomic rewrite would make a shared file private.
    """
    os.chmod(tmp, _new_file_mode(Path(path)))
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (a crash leaves the old file or the new one, never half of one).

    The file keeps the permission bits of the file it replaces (a new file gets the usual ``0666 & ~umask``), not the
    ``0600`` of the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        replace_keeping_mode(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` atomically (a crash leaves the old file or the new one, never half of one)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + TMP_SUFFIX)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def remove_stale_temps(folder: Path, pattern: str = f"*{TMP_SUFFIX}", min_age_s: float = 60.0) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (those older than ``min_age_s``).

    A write takes milliseconds, so a temporary file a minute old belongs to no live writer. Returns what was removed.
    """
    removed = []
    now = time.time()
    for path in Path(folder).glob(pattern):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink() and now - path.stat().st_mtime >= min_age_s:
                path.unlink()
                removed.append(path)
    return removed
