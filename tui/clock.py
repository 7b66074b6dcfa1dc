"""Where the dashboard gets the time: the wall clock, or a frozen one for tests and screenshots."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time in epoch seconds."""

    def now(self) -> float:
        """The current time (UTC epoch seconds)."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> float:
        """`time.time()`."""
        return time.time()


class FrozenClock:
    """A clock that only moves when told to (snapshot tests, screenshots)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        """The frozen time."""
        return self.at

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.at += seconds
