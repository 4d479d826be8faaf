"""``python -m sluice ...``: the ``sluice`` command, for an environment without its script on
PATH."""

from sluice.cli import main

raise SystemExit(main())
