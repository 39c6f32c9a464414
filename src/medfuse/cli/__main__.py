"""``python -m medfuse.cli``: the same as the ``medfuse`` command."""

from medfuse.cli.app import main

main()
