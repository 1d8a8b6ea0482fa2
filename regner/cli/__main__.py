"""``python -m regner.cli``: the same as the ``regner`` command."""

from regner.cli import main

main()
