"""``python -m regner``: the same as the ``regner`` command."""

from regner.cli import main

main()
