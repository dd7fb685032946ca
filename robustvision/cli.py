"""The ``robustvision`` command line: a thin typer app over the package's factories.

Each capability keeps its commands in ``robustvision/commands/<name>.py`` (a ``typer.Typer`` called ``app``);
this module only mounts them and turns expected errors into one clear line.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from robustvision.errors import UserError, describe_error

# (command name, module, help). Modules are imported when the CLI starts; they hold no domain logic.
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("data", "robustvision.commands.data", "List and inspect data sets."),
    ("zoo", "robustvision.commands.zoo", "The model zoo: list architectures, train the default zoo."),
    ("noises", "robustvision.commands.noises", "List every noise with its kind, parameters and budgets."),
    ("results", "robustvision.commands.results", "Read the results store: print, export CSV/Parquet."),
    ("defend", "robustvision.commands.defend", "Gated Batch Normalization and multi-perturbation defenses."),
    ("das", "robustvision.commands.das", "Dual Attention Suppression: physical camouflage on a 3D vehicle."),
    ("iseg", "robustvision.commands.iseg", "Interactive segmentation (EdgeFlow): train, evaluate, predict."),
    ("annotate", "robustvision.commands.annotate", "The browser annotation tool."),
    ("adapt", "robustvision.commands.adapt", "Unsupervised domain adaptation for segmentation (CFContra)."),
]
# Single commands: (module, function name) registered directly on the root app.
COMMANDS: list[tuple[str, str]] = [
    ("robustvision.commands.train", "train"),
    ("robustvision.commands.bench", "bench"),
    ("robustvision.commands.report", "report"),
    ("robustvision.commands.check", "check"),
    ("robustvision.commands.card", "card"),
]

app = typer.Typer(
    name="robustvision",
    help="robustvision: benchmark, defend, attack, annotate and adapt vision models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, soft_wrap=True)  # one error stays one line, whatever the width


def _mount() -> None:
    for name, module, help_text in SUBCOMMANDS:
        try:
            sub = importlib.import_module(module).app
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        app.add_typer(sub, name=name, help=help_text)
    for module, func in COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        app.command(name=func)(getattr(mod, func))


@app.callback()
def _root() -> None:
    """robustvision: benchmark, defend, attack, annotate and adapt vision models."""


_mount()


DEBUG_ENV = "ROBUSTVISION_DEBUG"


def main() -> None:
    """Console entry point: expected errors become one red line and exit status 2.

    Any other exception also prints one line (exit status 1) unless ``ROBUSTVISION_DEBUG=1`` asks for the traceback.
    """
    try:
        app()
    except UserError as err:
        err_console.print(f"[bold red]error:[/] {escape(describe_error(err))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: everything already stored is kept; run again to resume")
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the CLI-wide guard: one line instead of a traceback
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        err_console.print(
            f"[bold red]error:[/] {escape(describe_error(err))} [dim](set {DEBUG_ENV}=1 for the traceback)[/]",
            highlight=False,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
