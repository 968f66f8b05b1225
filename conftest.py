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

# Hypothesis: no per-example deadline. The property tests check what a result is, not how fast
# it came: on a 2-core CI machine running broker suites beside them, a 354 ms example of a
# 200 ms deadline failed a codec property (FlakyFailure) that held on every input.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # pragma: no cover - hypothesis comes with the dev extra
    pass
else:
    _hypothesis_settings.register_profile("unimq", deadline=None)
    _hypothesis_settings.load_profile("unimq")
