"""`python -m bazaar.orders`: the same as `bazaar-orders`."""

from bazaar.orders.cli import main

raise SystemExit(main())
