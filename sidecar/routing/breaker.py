"""A circuit breaker per target: stop sending to a dead target, probe it again later.

closed --(N consecutive failures, or a failure share over the recent window)--> open
open --(cool-down elapsed)--> half_open: exactly one request is let through as a probe
half_open --(probe succeeds)--> closed;  --(probe fails)--> open (cool-down doubles, capped)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from sidecar.routing.config import BreakerConfig

MAX_COOLDOWN_FACTOR = 8


class Breaker:
    """The health of one target."""

    def __init__(self, cfg: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.state = "closed"
        self.consecutive = 0
        self.outcomes: deque[bool] = deque(maxlen=cfg.window)
        self.opened_at = 0.0
        self.cooldown = cfg.cooldown
        self.probing = False
        self.requests = 0
        self.failures = 0
        self.last_used_at: float | None = None
        self.on_change: Callable[[str], None] | None = None

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(state)

    def current(self) -> str:
        """The state now (an open breaker whose cool-down passed reads as half_open)."""
        if self.state == "open" and self.clock() - self.opened_at >= self.cooldown:
            self._set("half_open")
            self.probing = False
        return self.state

    def allows(self) -> bool:
        """Whether a request may go to this target now (claims the probe when half-open)."""
        state = self.current()
        if state == "closed":
            return True
        if state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    @property
    def healthy(self) -> bool:
        """True when the target takes traffic normally."""
        return self.current() == "closed"

    def success(self) -> None:
        """A request to the target succeeded."""
        self.requests += 1
        self.last_used_at = time.time()
        self.consecutive = 0
        self.outcomes.append(True)
        if self.state != "closed":
            self.cooldown = self.cfg.cooldown
            self.outcomes.clear()
            self.probing = False
            self._set("closed")

    def failure(self) -> None:
        """A request to the target failed in a way that says the target is unwell."""
        self.requests += 1
        self.failures += 1
        self.last_used_at = time.time()
        self.consecutive += 1
        self.outcomes.append(False)
        if self.state == "half_open":
            self.cooldown = min(self.cooldown * 2, self.cfg.cooldown * MAX_COOLDOWN_FACTOR)
            self._open()
            return
        if self.state != "closed":
            return
        n = len(self.outcomes)
        rate = self.outcomes.count(False) / n if n else 0.0
        if self.consecutive >= self.cfg.failures or (n >= self.cfg.min_requests and rate >= self.cfg.failure_rate):
            self._open()

    def _open(self) -> None:
        self.opened_at = self.clock()
        self.probing = False
        self._set("open")

    def release_probe(self) -> None:
        """A probe ended without a verdict (e.g. a 400): let the next request probe."""
        if self.state == "half_open":
            self.probing = False
