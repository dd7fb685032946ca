"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations

from robustvision.registry import UnknownNameError


class UserError(Exception):
    """Base of errors caused by the user's input (bad names, paths, shapes, settings)."""


# Exceptions that commands convert to UserError at the CLI edge.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    UnknownNameError,
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
)
