"""How long the fuzz tests run: a bounded number of examples in CI, many more from scripts/fuzz.sh.

Every fuzz test takes its `settings` from `fuzz_settings()`, so one environment variable
(FASTCLIPSEG_FUZZ_EXAMPLES) sets the length of the whole fuzz run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Bounded for CI: each fuzz test stays within a few seconds on 2 cores at this count.
CI_EXAMPLES = 150


def fuzz_examples() -> int:
    value = os.environ.get("FASTCLIPSEG_FUZZ_EXAMPLES", "")
    return int(value) if value.strip() else CI_EXAMPLES


def fuzz_settings(share: float = 1.0) -> settings:
    """Hypothesis settings for a fuzz test; `share` scales the example count for slow targets."""
    return settings(
        max_examples=max(1, int(fuzz_examples() * share)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
