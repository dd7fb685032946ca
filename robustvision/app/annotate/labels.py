"""Label lists in EISeg's text format: one ``index name r g b`` line per label."""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from pathlib import Path

from robustvision.fileio import atomic_write_text

MAX_NAME_LENGTH = 64
_COMMENT = re.compile(r"(^|\s)#.*$")


@dataclass(frozen=True)
class Label:
    """One class: its index (the PNG export's pixel value), name and display colour."""

    index: int
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "color": list(self.color)}

    @classmethod
    def from_dict(cls, data: dict) -> Label:
        try:
            color = tuple(int(c) for c in data["color"])
            label = cls(int(data["index"]), str(data["name"]).strip(), color)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"a label needs index, name and color [r, g, b]; got {data!r}") from err
        label.validate()
        return label

    def validate(self) -> None:
        if not 1 <= self.index <= 254:
            raise ValueError(f"label index must be in 1..254 (0 is background, 255 ignore), got {self.index}")
        if not self.name or any(ch.isspace() or not ch.isprintable() for ch in self.name):
            raise ValueError(f"label name must be one word without spaces, got {self.name!r}")
        if self.name.startswith("#"):
            raise ValueError(f"label name must not start with '#' (it starts a comment in labels.txt): {self.name!r}")
        if len(self.name) > MAX_NAME_LENGTH:
            raise ValueError(f"label name must be at most {MAX_NAME_LENGTH} characters, got {len(self.name)}")
        if len(self.color) != 3 or any(not 0 <= c <= 255 for c in self.color):
            raise ValueError(f"label colour must be three values in 0..255, got {self.color}")


def default_color(index: int) -> tuple[int, int, int]:
    """A distinct colour per index (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def parse_labels(text: str, source: str = "labels file") -> list[Label]:
    """Parse ``index name [r g b]`` lines (blank lines and comments ignored).

    A comment is a word starting with ``#`` and the rest of its line; a ``#`` inside a word (``car#2``) is part of it.
    """
    labels: list[Label] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        parts = line.split()
        try:
            index = int(parts[0])
            name = parts[1]
            color = tuple(int(v) for v in parts[2:5]) if len(parts) >= 5 else default_color(index)
        except (IndexError, ValueError) as err:
            raise ValueError(f"{source} line {lineno}: expected 'index name r g b', got {raw!r}") from err
        label = Label(index, name, color)  # type: ignore[arg-type]
        try:
            label.validate()
        except ValueError as err:
            raise ValueError(f"{source} line {lineno}: {err}") from err
        labels.append(label)
    check_unique(labels)
    return labels


def check_unique(labels: list[Label]) -> None:
    seen_idx, seen_name = set(), set()
    for label in labels:
        if label.index in seen_idx or label.name in seen_name:
            raise ValueError(f"duplicate label index or name: {label.index} {label.name}")
        seen_idx.add(label.index)
        seen_name.add(label.name)


def read_labels(path: str | Path) -> list[Label]:
    """Read a labels file; a missing file means no labels yet."""
    path = Path(path)
    if not path.exists():
        return []
    return parse_labels(path.read_text(encoding="utf-8"), str(path))


def format_labels(labels: list[Label]) -> str:
    return "".join(f"{lb.index} {lb.name} {lb.color[0]} {lb.color[1]} {lb.color[2]}\n" for lb in labels)


def write_labels(path: str | Path, labels: list[Label]) -> None:
    """Write labels atomically in EISeg's format."""
    check_unique(labels)
    atomic_write_text(Path(path), format_labels(labels))
