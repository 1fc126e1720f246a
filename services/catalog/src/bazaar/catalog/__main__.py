"""`python -m bazaar.catalog`: the same as `bazaar-catalog`."""

from bazaar.catalog.cli import main

raise SystemExit(main())
