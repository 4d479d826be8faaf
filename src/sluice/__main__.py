"""``python -m sluice ...``: the ``sluice`` command, for an environment without its script on
PATH."""

import sys

try:
    from sluice.cli import main
except KeyboardInterrupt:  # Ctrl-C during this import: one line, as sluice.cli.main says it
    print("sluice: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
