"""L6: the ``nluforge`` command line (typer). Each command lives in its own module."""

from nluforge.cli.app import app, main

__all__ = ["app", "main"]
