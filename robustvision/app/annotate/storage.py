"""Per-image annotation files under ``DIR/annotations/``: atomic writes, per-object last-write-wins merges.

Every change re-reads the file under a lock, replaces just the changed object and writes the whole file atomically
(temporary file + ``os.replace``). A killed server therefore leaves either the previous or the new file, never a
torn one, and two browser tabs editing different objects of one image never lose each other's objects.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from robustvision.fileio import atomic_write_text

ANNOTATION_VERSION = 1


class AnnotationStore:
    """Reads and writes ``<image name>.json`` files in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def empty(self, name: str, width: int, height: int) -> dict[str, Any]:
        return {
            "version": ANNOTATION_VERSION,
            "image": name,
            "width": width,
            "height": height,
            "done": False,
            "objects": [],
        }

    def read(self, name: str, width: int = 0, height: int = 0) -> dict[str, Any]:
        """The annotation of ``name`` (an empty one when none is saved). A corrupt file is an error, never erased."""
        path = self.path(name)
        if not path.exists():
            return self.empty(name, width, height)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"annotation file {str(path)!r} is corrupt ({err}); fix or move it away") from err
        if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
            raise ValueError(f"annotation file {str(path)!r} has no 'objects' list")
        return data

    def write(self, name: str, data: dict[str, Any]) -> None:
        data["saved_at"] = time.time()
        atomic_write_text(self.path(name), json.dumps(data, indent=1))

    def upsert_object(self, name: str, obj: dict[str, Any], width: int, height: int) -> dict[str, Any]:
        """Insert or replace the object with ``obj['id']`` (last write wins for that object only)."""
        with self.lock(name):
            data = self.read(name, width, height)
            obj = {**obj, "updated_at": time.time()}
            objects = [o for o in data["objects"] if o.get("id") != obj["id"]]
            position = next((i for i, o in enumerate(data["objects"]) if o.get("id") == obj["id"]), len(objects))
            objects.insert(position, obj)
            data["objects"] = objects
            data["width"], data["height"] = width, height
            self.write(name, data)
            return data

    def delete_object(self, name: str, object_id: str) -> dict[str, Any]:
        with self.lock(name):
            data = self.read(name)
            before = len(data["objects"])
            data["objects"] = [o for o in data["objects"] if o.get("id") != object_id]
            if len(data["objects"]) == before:
                raise KeyError(f"image {name!r} has no object {object_id!r}")
            self.write(name, data)
            return data

    def set_done(self, name: str, done: bool, width: int, height: int) -> dict[str, Any]:
        with self.lock(name):
            data = self.read(name, width, height)
            data["done"] = bool(done)
            self.write(name, data)
            return data
