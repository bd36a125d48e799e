"""``python -m harness``: the command line of harness.cli."""

from harness.cli import main

raise SystemExit(main())
