"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations

from robustvision.registry import UnknownNameError


class UserError(Exception):
    """Base of errors caused by the user's input (bad names, paths, shapes, settings)."""


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency that the base install leaves to a pyproject extra is missing (names the install)."""


# Exceptions that commands convert to UserError at the CLI edge.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    UnknownNameError,
    MissingExtraError,
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
)


def one_line(text: str) -> str:
    """A message on one line (the CLI prints each error as exactly one line)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe_error(err: BaseException) -> str:
    """A one-line message for an exception raised by bad input, naming the file where the exception knows it.

    Used by the CLI for exceptions no command converted itself: a pickled object refused by weights-only loading,
    a file-system error (a folder where a file was expected, a file where a folder was expected), broken YAML, an
    image too large to decode.
    """
    import pickle

    if isinstance(err, (UserError, *EXPECTED_ERRORS)) and not isinstance(err, OSError):
        return one_line(str(err)) or type(err).__name__
    if isinstance(err, pickle.UnpicklingError):
        return "not a trusted checkpoint: it holds Python objects that weights-only loading refuses to run"
    try:
        from PIL import Image

        if isinstance(err, Image.DecompressionBombError):
            return f"image too large to decode safely: {one_line(str(err))}"
    except ImportError:  # pragma: no cover - Pillow is a dependency
        pass
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror}{where}"
    try:
        import yaml

        if isinstance(err, yaml.YAMLError):
            return f"invalid YAML: {one_line(str(err))}"
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        pass
    text = one_line(str(err))
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
