"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (bad path, unknown name, bad value). The CLI prints
its message as one line, with no traceback, and exits with status 2. Messages name the problem and the
fix: ``unknown method 'lorra' (did you mean 'lora'?); see `nluforge methods```.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input. ``str(err)`` is the one-line message shown to the user."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))  # always one line


class MissingExtraError(UserError):
    """An optional backend is not installed."""

    def __init__(self, package: str, extra: str):
        super().__init__(f"{package} is not installed; install it with: pip install 'nluforge[{extra}]'")
