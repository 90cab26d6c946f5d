"""``python -m nluforge`` is the ``nluforge`` command."""

from nluforge.cli import main

main()
