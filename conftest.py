"""Repository-wide pytest set-up: the test tiers and the closing summary table.

The two plugins live in scripts/pytest_plugins (see docs/testing.md, "Tiers and the summary"):
``unimq_test_tiers`` sorts every test into a tier, suite and backend and marks it;
``unimq_test_summary`` prints the table and applies the CI=true rules. They are loaded here,
so plain ``python -m pytest`` gets them as well as scripts/test.sh.
"""

from __future__ import annotations

import sys
from pathlib import Path

_PLUGINS = str(Path(__file__).resolve().parent / "scripts" / "pytest_plugins")
if _PLUGINS not in sys.path:
    sys.path.insert(0, _PLUGINS)

# pytester: tests/test_suite_summary.py runs the two plugins on small throwaway projects.
pytest_plugins = ["unimq_test_tiers", "unimq_test_summary", "pytester"]
