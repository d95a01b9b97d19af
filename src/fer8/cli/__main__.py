"""``python -m fer8.cli``: the ``fer8`` command, as ``python -m fer8`` is."""

from fer8.cli import main

main()
