"""The typer app, and the one place where user errors become a one-line message and exit code 2.

Command modules register themselves on :data:`app` when imported (see ``_COMMANDS``); they import
heavy libraries (torch, transformers) inside the command body, so ``nluforge --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from nluforge.core.errors import UserError

app = typer.Typer(
    name="nluforge",
    help="Adapt, compress, attack and audit pretrained encoders on NLU tasks, and compare every variant.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _root() -> None:
    """nluforge: which way of adapting my encoder gives the best accuracy for what I can afford?"""


_COMMANDS = ["train", "evaluate", "predict", "listing", "report", "bench", "compress", "distill",
             "checkpoints", "attack", "audit"]


def _load_commands() -> None:
    for name in _COMMANDS:
        try:
            importlib.import_module(f"nluforge.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"nluforge.cli.{name}":
                raise


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise SystemExit(code)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _load_commands()
    try:
        app(standalone_mode=True)
    except UserError as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except SystemExit:
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
