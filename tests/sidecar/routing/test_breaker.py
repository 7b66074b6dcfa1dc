"""The circuit breaker's states, driven by a fake clock."""

from __future__ import annotations

from sidecar.routing.breaker import Breaker
from sidecar.routing.config import BreakerConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_probes_once_after_the_cooldown() -> None:
    clock = Clock()
    b = Breaker(BreakerConfig(failures=3, cooldown=10.0, min_requests=100), clock)
    b.failure()
    b.failure()
    assert b.current() == "closed" and b.allows()
    b.failure()
    assert b.current() == "open" and not b.allows()
    clock.now += 9.9
    assert not b.allows()
    clock.now += 0.2
    assert b.current() == "half_open"
    assert b.allows()  # the probe
    assert not b.allows()  # only one probe at a time
    b.success()
    assert b.current() == "closed" and b.allows()


def test_a_failed_probe_reopens_with_a_longer_cooldown() -> None:
    clock = Clock()
    b = Breaker(BreakerConfig(failures=1, cooldown=10.0), clock)
    b.failure()
    clock.now += 10
    assert b.allows()
    b.failure()
    assert b.current() == "open"
    clock.now += 10
    assert b.current() == "open"  # the cool-down doubled
    clock.now += 10
    assert b.current() == "half_open"


def test_failure_rate_over_the_window_opens_without_a_consecutive_run() -> None:
    b = Breaker(BreakerConfig(failures=100, failure_rate=0.5, window=10, min_requests=10), Clock())
    for _ in range(5):
        b.success()
        assert b.current() == "closed"
        b.failure()
    assert b.current() == "open"


def test_success_resets_the_consecutive_count() -> None:
    b = Breaker(BreakerConfig(failures=2, min_requests=100), Clock())
    for _ in range(10):
        b.failure()
        b.success()
    assert b.current() == "closed"


def test_state_changes_are_announced() -> None:
    clock = Clock()
    b = Breaker(BreakerConfig(failures=1, cooldown=1.0), clock)
    seen: list[str] = []
    b.on_change = seen.append
    b.failure()
    clock.now += 1
    b.allows()
    b.success()
    assert seen == ["open", "half_open", "closed"]
