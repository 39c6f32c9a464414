"""``python -m medfuse``: the same as the ``medfuse`` command."""

from medfuse.cli import main

main()
