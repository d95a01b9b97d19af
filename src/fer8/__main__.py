"""``python -m fer8`` is the ``fer8`` command."""

from fer8.console import main

main()
