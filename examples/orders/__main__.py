"""``python -m examples.orders``: run the order-processing demo (see app.py)."""

from .app import main

raise SystemExit(main())
