"""CLI command modules, one per capability. Each holds argument parsing and printing only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from robustvision.errors import EXPECTED_ERRORS, UserError, describe_error, one_line


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the expected exceptions of a command body into :class:`UserError` (one line, no traceback).

    Besides :data:`~robustvision.errors.EXPECTED_ERRORS`: file-system errors (a folder given for a file and the
    like), refused pickles, broken YAML and decompression bombs, each as one line naming what went wrong.
    """
    import pickle

    import yaml
    from PIL import Image

    try:
        yield
    except UserError:
        raise
    except EXPECTED_ERRORS as err:
        if isinstance(err, OSError) and err.strerror:
            raise UserError(describe_error(err)) from err
        raise UserError(one_line(str(err))) from err
    except (OSError, pickle.UnpicklingError, yaml.YAMLError, Image.DecompressionBombError) as err:
        raise UserError(describe_error(err)) from err


def default_command_group(default: str):
    """A typer group class that runs ``default`` when the first argument is not one of its commands.

    It lets ``robustvision annotate DIR`` mean ``robustvision annotate serve DIR`` while ``robustvision annotate
    export DIR`` still reaches ``export``.
    """
    from typer.core import TyperGroup

    class DefaultCommandGroup(TyperGroup):
        def parse_args(self, ctx, args):
            if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
                args = [default, *args]
            return super().parse_args(ctx, args)

    return DefaultCommandGroup


def check_at_least(option: str, value: float | None, minimum: float, what: str = "") -> None:
    """``ValueError`` (one line) when an option given a value is below ``minimum``; ``None`` means "not given"."""
    if value is not None and value < minimum:
        raise ValueError(f"{option} must be at least {minimum:g}{what}, got {value:g}")


def check_writable_file(option: str, path, suffixes: tuple[str, ...] = ()) -> None:
    """``ValueError`` when ``path`` (an output file) is a folder, lies under a file, or lacks one of ``suffixes``."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ValueError(f"{option} {str(path)!r} must end in {' or '.join(suffixes)}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {str(path)!r} lies under {str(parent)!r}, which is a file")
            break
