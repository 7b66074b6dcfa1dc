"""What emitting Claude Code's budget headers costs per request, in process (microseconds):
the standing of three budgets as `anthropic-ratelimit-unified-*` headers, and dropping the
upstream's twelve `anthropic-ratelimit-*` headers from an answer.

    python bench/unified_headers.py [--n 200000]

The whole cost of a budget on the request path (estimate, reservation, settlement and these
headers) is `python bench/overhead.py --config-extra bench/budget.toml --floor-sidecar`.
"""

from __future__ import annotations

import argparse
import timeit
from zoneinfo import ZoneInfo

from multidict import CIMultiDict

from sidecar.gateway import unified
from sidecar.policy.budgets import Budgets
from sidecar.policy.config import BudgetConfig

UPSTREAM = [("content-type", "application/json"), ("request-id", "req_x")] + [
    (f"anthropic-ratelimit-{k}-{x}", "1") for k in ("requests", "input-tokens", "output-tokens", "tokens") for x in ("limit", "remaining", "reset")
]


def main() -> None:
    """Print both figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=200_000)
    n = p.parse_args().n
    b = Budgets(BudgetConfig(daily_usd=100, weekly_usd=300, monthly_usd=1000), ZoneInfo("Europe/Berlin"))
    b.settle(b.reserve(1.0), 80.0)
    t = timeit.timeit(lambda: unified.standing(unified.fullest(b.caps())), number=n)
    print(f"standing headers (3 budgets): {t / n * 1e6:.1f} us per request")

    def strip() -> None:
        out = CIMultiDict(UPSTREAM)
        for k in [k for k in out if k.lower().startswith(unified.UPSTREAM_PREFIX)]:
            out.popall(k, None)

    copy = timeit.timeit(lambda: CIMultiDict(UPSTREAM), number=n)
    print(f"dropping the upstream's 12 anthropic-ratelimit-* headers: {(timeit.timeit(strip, number=n) - copy) / n * 1e6:.1f} us per request")


if __name__ == "__main__":
    main()
