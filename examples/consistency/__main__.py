"""``python -m examples.consistency``: run the outbox demo (see app.py)."""

from .app import main

raise SystemExit(main())
