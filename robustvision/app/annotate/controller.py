"""The annotation tool's rules, independent of HTTP: images, labels, click sessions, objects, autosave, export.

The click logic is the package's own (:mod:`robustvision.segmentation.interactive`): the same predictors and
``Click`` records that the NoC benchmark uses.
"""

from __future__ import annotations

import glob
import io
import os
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from robustvision.app.annotate.geometry import check_polygons, mask_to_polygons
from robustvision.app.annotate.labels import Label, read_labels, write_labels
from robustvision.app.annotate.storage import AnnotationStore
from robustvision.app.annotate.threads import on_torch_thread
from robustvision.fileio import remove_stale_temps
from robustvision.segmentation.interactive import (
    PRED_THRESHOLD,
    Click,
    ClickHistory,
    create_predictor,
    list_predictors,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ANNOTATION_FOLDER = "annotations"
DEFAULT_LABELS_FILE = "labels.txt"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# Every click session keeps the image, its features and, per undo step, the float32 probability map (plus EdgeFlow's
# edge map, which the next click continues from), so memory grows with the pixel count. 25 Mpx (a 6000x4000 camera
# frame) is the largest image the tool opens or accepts.
MAX_IMAGE_PIXELS = 25_000_000
# Names an uploaded or listed file may have: at most this many UTF-8 bytes (the annotation file adds ".json" and the
# file system allows 255), no path separators, no control characters, not hidden.
MAX_NAME_BYTES = 200
BACKEND_PREFERENCE = ("edgeflow", "edgeflow_noedge", "grabcut", "random_walker")


class NotFound(KeyError):
    """An image, object or session that does not exist (HTTP 404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class ImageRecord:
    """One image of the folder with its annotation status (``unlabelled``, ``in_progress``, ``done``, ``error``)."""

    name: str
    status: str
    objects: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready fields (the image list of the API)."""
        return {"name": self.name, "status": self.status, "objects": self.objects, "error": self.error}


def name_problem(name: str) -> str | None:
    """Why a file name cannot be served or stored safely, or None when it can."""
    if not name:
        return "the file name is empty"
    if "/" in name or "\\" in name:
        return "the file name contains a path separator ('/' or '\\')"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "the file name contains a control character"
    if name.startswith("."):
        return "hidden files (names starting with '.') are not served"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8"
    if size > MAX_NAME_BYTES:
        return f"the file name is {size} bytes long; the limit is {MAX_NAME_BYTES}"
    return None


def decode_rgb(data_or_path: bytes | Path) -> np.ndarray:
    """Decode an image to ``H x W x 3`` uint8 RGB; ``ValueError`` when it is not a readable image."""
    try:
        src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
        with Image.open(src) as img:
            check_pixels(img.width, img.height)
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"not a readable image: {err}") from err


def check_pixels(width: int, height: int) -> None:
    """``ValueError`` naming the limit when an image has more than :data:`MAX_IMAGE_PIXELS` pixels."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"image of {width}x{height} px ({width * height:,} px) exceeds the tool's {MAX_IMAGE_PIXELS:,}-pixel "
            "limit; downscale it first"
        )


class AnnotationProject:
    """A folder of images being annotated.

    Args:
        root: the image folder (``DIR``); annotations go to ``DIR/annotations/``.
        labels_file: EISeg-style labels file (default ``DIR/labels.txt``).
        backend: default segmentation backend (``edgeflow`` when its checkpoint is available).
        device: where the networks run.
    """

    def __init__(
        self, root: str | Path, labels_file: str | Path | None = None, backend: str | None = None, device: str = "cpu"
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist")
        self.annotations_dir = self.root / ANNOTATION_FOLDER
        self.annotations_dir.mkdir(exist_ok=True)
        self.store = AnnotationStore(self.annotations_dir)
        self.labels_file = Path(labels_file) if labels_file else self.root / DEFAULT_LABELS_FILE
        # what writers killed mid-save left behind (the saved files themselves are whole: writes are atomic)
        remove_stale_temps(self.annotations_dir)
        remove_stale_temps(self.root, ".upload-*.part")
        remove_stale_temps(self.labels_file.parent, f"{glob.escape(self.labels_file.name)}*.tmp")
        self._labels = read_labels(self.labels_file)
        self.device = device
        self.backends = [b for b in BACKEND_PREFERENCE if b in list_predictors()]
        self.default_backend = backend or self._first_working_backend()
        if self.default_backend not in list_predictors():
            raise ValueError(f"unknown backend {self.default_backend!r}; known: {', '.join(list_predictors())}")
        self._errors: dict[str, tuple[float, str | None]] = {}
        self._sizes: dict[str, tuple[int, int]] = {}

    def _first_working_backend(self) -> str:
        for name in self.backends:
            try:
                on_torch_thread(create_predictor, name, device=self.device)
                return name
            except (FileNotFoundError, ValueError, RuntimeError):
                continue
        raise RuntimeError("no interactive segmentation backend could be created")

    # ------------------------------------------------------------------ images
    def image_names(self) -> list[str]:
        """Image files directly in the folder, hidden files (such as macOS's ``._x.jpg``) left out."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )

    def _path_problem(self, name: str) -> str | None:
        """Why a listed file is not served (a name that is unsafe in a URL or file name, a link leaving the folder)."""
        problem = name_problem(name)
        if problem:
            return problem
        if (self.root / name).resolve().parent != self.root:
            return "a link to a file outside the folder is not served"
        return None

    def image_path(self, name: str) -> Path:
        """The file of a listed image. Anything else (other folders, ``..``, hidden files) is :class:`NotFound`."""
        if not isinstance(name, str) or name_problem(name):
            raise NotFound(f"no image {name!r}")
        path = (self.root / name).resolve()
        if path.parent != self.root or not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise NotFound(f"no image {name!r}")
        return path

    def image_error(self, name: str) -> str | None:
        """Why an image cannot be opened (cached by modification time), or None."""
        path = self.image_path(name)
        mtime = path.stat().st_mtime
        cached = self._errors.get(name)
        if cached and cached[0] == mtime:
            return cached[1]
        try:
            with Image.open(path) as img:
                check_pixels(img.width, img.height)
                img.load()
                self._sizes[name] = (img.height, img.width)
            error = None
        except ValueError as err:
            error = str(err)
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
            error = f"cannot read image: {err}"
        self._errors[name] = (mtime, error)
        return error

    def load_image(self, name: str) -> np.ndarray:
        """The image ``name`` as an ``H x W x 3`` uint8 RGB array (``NotFound`` or ``ValueError`` when unreadable)."""
        path = self.image_path(name)
        try:
            image = decode_rgb(path)
        except ValueError as err:
            raise ValueError(f"image {name!r}: {err}") from err
        self._sizes[name] = image.shape[:2]
        return image

    def image_size(self, name: str) -> tuple[int, int]:
        """``(height, width)`` of image ``name``, read from its header once and cached."""
        if name not in self._sizes:
            if self.image_error(name):
                raise ValueError(f"image {name!r}: {self.image_error(name)}")
        return self._sizes[name]

    def list_images(self) -> list[ImageRecord]:
        """Every image of the folder with its annotation status, sorted by name."""
        records = []
        for name in self.image_names():
            problem = self._path_problem(name)
            if problem:
                records.append(ImageRecord(name, "error", error=problem))
                continue
            try:
                error = self.image_error(name)
            except NotFound:  # removed since it was listed
                continue
            if error:
                records.append(ImageRecord(name, "error", error=error))
                continue
            try:
                data = self.store.read(name)
            except ValueError as err:
                records.append(ImageRecord(name, "error", error=str(err)))
                continue
            n = len(data["objects"])
            status = "done" if data.get("done") else ("in_progress" if n else "unlabelled")
            records.append(ImageRecord(name, status, objects=n))
        return records

    def save_upload(self, filename: str, data: bytes) -> str:
        """Store an uploaded image in the folder after checking its name, size and content."""
        filename = filename or ""
        name = filename.rsplit("/", 1)[-1]  # browsers send a base name; some clients send a path
        problem = name_problem(name)
        if problem:
            raise ValueError(f"cannot store an upload named {filename[:80]!r}: {problem}")
        if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"uploads must be images ({', '.join(IMAGE_EXTENSIONS)}), got {filename[:80]!r}")
        if len(data) > MAX_UPLOAD_BYTES:
            raise OverflowError(f"upload of {len(data):,} bytes exceeds the {MAX_UPLOAD_BYTES:,}-byte limit")
        decode_rgb(data)  # also refuses images over MAX_IMAGE_PIXELS before decoding them
        target = self.root / name
        if target.exists() or target.is_symlink():
            raise FileExistsError(f"an image named {name!r} already exists")
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, target)  # never replaces a file another upload stored meanwhile
            except FileExistsError as err:
                raise FileExistsError(f"an image named {name!r} already exists") from err
            except OSError:  # a file system without hard links
                os.replace(tmp, target)
                return name
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return name

    # ------------------------------------------------------------------ labels
    @property
    def labels(self) -> list[Label]:
        """The project's labels (index, name, colour)."""
        return list(self._labels)

    def set_labels(self, labels: list[Label]) -> None:
        """Replace the labels and write them to the labels file."""
        write_labels(self.labels_file, labels)
        self._labels = list(labels)

    def label_index(self, label: int) -> int:
        """``label`` when it is a known label index (any in 1..254 without labels); otherwise ``ValueError``."""
        if self._labels and label not in {lb.index for lb in self._labels}:
            raise ValueError(f"unknown label index {label}; known: {[lb.index for lb in self._labels]}")
        if not 1 <= label <= 254:
            raise ValueError(f"label index must be in 1..254, got {label}")
        return label

    # ------------------------------------------------------------------ annotations
    def annotation(self, name: str) -> dict[str, Any]:
        """The saved annotation of image ``name`` (objects, status), empty when there is none yet."""
        h, w = self.image_size(name)
        return self.store.read(name, w, h)

    def save_object(
        self, name: str, polygons: Any, label: int, object_id: str | None = None, clicks: list | None = None
    ) -> dict[str, Any]:
        """Create or replace one object (its polygons and label) and save the file atomically."""
        h, w = self.image_size(name)
        obj = {
            "id": object_id or uuid.uuid4().hex[:12],
            "label": self.label_index(int(label)),
            "polygons": check_polygons(polygons, h, w),
        }
        if clicks is not None:
            obj["clicks"] = clicks
        data = self.store.upsert_object(name, obj, w, h)
        return next(o for o in data["objects"] if o["id"] == obj["id"])

    def delete_object(self, name: str, object_id: str) -> dict[str, Any]:
        """Remove one object from image ``name``'s annotation; returns the updated annotation."""
        self.image_path(name)
        try:
            return self.store.delete_object(name, object_id)
        except KeyError as err:
            raise NotFound(str(err.args[0])) from err

    def set_done(self, name: str, done: bool) -> dict[str, Any]:
        """Mark image ``name`` done (or in progress again); returns the updated annotation."""
        h, w = self.image_size(name)
        return self.store.set_done(name, done, w, h)


@dataclass
class ClickSession:
    """One labeller's (one tab's) interaction with one image: clicks, undo/redo, the current mask.

    The session keeps no undo list of its own: :attr:`history` is the predictor's
    (:class:`~robustvision.segmentation.interactive.ClickHistory`), whose steps hold each click's map and what the
    next click continues from. Undo and redo move its cursor; a click after an undo continues from the step shown
    and drops the undone ones.

    Args:
        project: the project the image belongs to.
        backend: predictor name; the per-image backbone work is cached by the predictor.
    """

    project: AnnotationProject
    backend: str = ""
    image_name: str | None = None
    predictor: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_latency_ms: float = 0.0

    def __post_init__(self) -> None:
        self.backend = self.backend or self.project.default_backend
        self.predictor = on_torch_thread(create_predictor, self.backend, device=self.project.device)

    @property
    def history(self) -> ClickHistory:
        """The object's undo history: the predictor's, the one record of every click."""
        return self.predictor.history

    @property
    def clicks(self) -> list[Click]:
        """The clicks of the object in progress (the current undo step)."""
        return list(self.history.clicks)

    @property
    def probs(self) -> np.ndarray | None:
        """The current ``H x W`` probability map (read-only), or None before the first click."""
        return self.history.probs

    @property
    def can_undo(self) -> bool:
        """Whether a click can be undone."""
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        """Whether an undone click can be redone."""
        return self.history.can_redo

    def set_backend(self, backend: str) -> None:
        """Switch the segmentation backend; the open image is loaded into the new predictor."""
        if backend not in list_predictors():
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(list_predictors())}")
        self.predictor = on_torch_thread(create_predictor, backend, device=self.project.device)
        self.backend = backend
        name, self.image_name = self.image_name, None
        if name:
            self.open(name)

    def open(self, name: str) -> dict[str, Any]:
        """Load an image into the predictor (its heavy per-image work happens here, once)."""
        if name != self.image_name:
            image = self.project.load_image(name)
            on_torch_thread(self.predictor.set_image, image)
            self.image_name = name
        self.reset()
        h, w = self.project.image_size(name)
        return {"image": name, "width": w, "height": h, "annotation": self.project.annotation(name)}

    def _require_image(self) -> str:
        if self.image_name is None:
            raise ValueError("open an image before clicking")
        return self.image_name

    def reset(self) -> None:
        """Forget the clicks of the object in progress (the predictor's history)."""
        if self.predictor is not None:
            self.predictor.reset()

    def click(self, x: int, y: int, positive: bool) -> np.ndarray:
        """Add a click at pixel ``(x, y)`` and return the new probability map."""
        name = self._require_image()
        h, w = self.project.image_size(name)
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f"click ({x}, {y}) lies outside the {w}x{h} image")
        clicks = self.clicks + [Click(int(y), int(x), bool(positive))]
        start = time.perf_counter()
        # the predictor continues from the step shown and records the answer after it, dropping the undone steps
        probs = on_torch_thread(self.predictor.predict, clicks)
        self.last_latency_ms = (time.perf_counter() - start) * 1000
        return probs

    def undo(self) -> np.ndarray | None:
        """Step back one click; returns the probability map now shown (None: no clicks left)."""
        self.history.undo()
        return self.probs

    def redo(self) -> np.ndarray | None:
        """Bring back the last undone click (its kept step, no new prediction); returns the map now shown."""
        self.history.redo()
        return self.probs

    def mask(self) -> np.ndarray | None:
        """The current binary mask (probabilities above ``PRED_THRESHOLD``), or None before the first click."""
        return None if self.probs is None else self.probs > PRED_THRESHOLD

    def finish(self, label: int, object_id: str | None = None) -> dict[str, Any]:
        """Turn the current mask into a polygon object, save it, and start a new object."""
        name = self._require_image()
        mask = self.mask()
        if mask is None or not mask.any():
            raise ValueError("nothing to finish: the current mask is empty (click on the object first)")
        polygons = mask_to_polygons(mask)
        if not polygons:
            raise ValueError("the current mask is too small to outline")
        obj = self.project.save_object(
            name, polygons, label, object_id=object_id, clicks=[c.to_dict() for c in self.clicks]
        )
        self.reset()
        return obj


class SessionPool:
    """Click sessions by client id (one per browser tab), least recently used dropped beyond ``capacity``."""

    def __init__(self, project: AnnotationProject, capacity: int = 16) -> None:
        self.project = project
        self.capacity = capacity
        self._sessions: OrderedDict[str, ClickSession] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, client: str) -> ClickSession:
        """The click session of browser tab ``client`` (created on first use; the oldest are dropped beyond the cap)."""
        if not client or len(client) > 64:
            raise ValueError("a client id of 1-64 characters is required")
        with self._lock:
            session = self._sessions.pop(client, None)
            if session is None:
                session = ClickSession(self.project)
            self._sessions[client] = session
            while len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)
            return session
