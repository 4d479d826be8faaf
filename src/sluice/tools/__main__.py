"""``python -m sluice.tools COMMAND ...``: the tools without the rest of the ``sluice`` CLI."""

from sluice.tools import main

raise SystemExit(main())
