"""CLI command modules, one per capability. Each holds argument parsing and printing only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from robustvision.errors import EXPECTED_ERRORS, UserError


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the expected exceptions of a command body into :class:`UserError` (one line, no traceback)."""
    try:
        yield
    except UserError:
        raise
    except EXPECTED_ERRORS as err:
        raise UserError(str(err)) from err
