"""One small registry used by every factory in the package (data sets, models, noises, techniques, ...).

Example:
    >>> from robustvision.registry import Registry
    >>> SHAPES = Registry("shape")
    >>> @SHAPES.register("square")
    ... def make_square(side: int = 1):
    ...     return ("square", side)
    >>> SHAPES.create("square", side=2)
    ('square', 2)
    >>> SHAPES.list("sq*")
    ['square']
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown name was asked of a registry; the message suggests the closest known names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to builders, with metadata, glob listing and close-name hints.

    Args:
        kind: what the registry holds, used in error messages ("noise", "model", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a builder under ``name`` with free-form metadata (family, kind, ...)."""

        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = builder
            self._meta[name] = dict(meta)
            return builder

        return decorator

    def add(self, name: str, builder: Callable[..., T], **meta: Any) -> None:
        """Register ``builder`` under ``name`` without a decorator."""
        self.register(name, **meta)(builder)

    def get(self, name: str) -> Callable[..., T]:
        """The builder for ``name``; raises :class:`UnknownNameError` with close names otherwise."""
        try:
            return self._builders[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._builders), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {len(self._builders)}; list them with `robustvision`)"

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the unit registered under ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata given at registration."""
        self.get(name)
        return dict(self._meta[name])

    def list(self, pattern: str = "*", **filters: Any) -> list[str]:
        """Sorted names matching a glob ``pattern`` and metadata equality ``filters``."""
        names = [n for n in self._builders if fnmatch.fnmatch(n, pattern)]
        for key, value in filters.items():
            names = [n for n in names if self._meta[n].get(key) == value]
        return sorted(names)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._builders))

    def __len__(self) -> int:
        return len(self._builders)
