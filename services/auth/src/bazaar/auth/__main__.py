"""`python -m bazaar.auth`: the same as `bazaar-auth`."""

from bazaar.auth.cli import main

raise SystemExit(main())
