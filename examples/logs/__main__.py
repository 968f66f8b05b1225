"""``python -m examples.logs``: ship a log file into SQLite through a broker (see app.py)."""

from .app import main

raise SystemExit(main())
