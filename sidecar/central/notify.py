"""Wakes policy long-polls when a new version lands.

On SQLite (one process) a push wakes the polls of this process directly. On PostgreSQL
every replica LISTENs on one channel and the pushing transaction NOTIFYs it at commit, so
a push on any replica wakes the polls held by all of them. A poll also re-reads the
version every `RECHECK_SECONDS`, so a lost notification (a dropped LISTEN connection)
delays a policy by seconds, never loses it.
"""

from __future__ import annotations

import asyncio

from sidecar.central.db import Database
from sidecar.central.policy_store import CHANNEL

RECHECK_SECONDS = 5.0


class PolicyNotifier:
    """An event replaced at every wake: take `waiter()` before reading the version, then
    wait on it, and no push between the read and the wait can be missed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.wakes = 0
        self.closing = False  # the server is shutting down: held polls answer now

    def close(self) -> None:
        """Wake every poll for good (shutdown): they answer 304 instead of holding on."""
        self.closing = True
        self.wake()

    def waiter(self) -> asyncio.Event:
        """The event the next wake sets."""
        return self._event

    def wake(self, _payload: str = "") -> None:
        """Wake every poll waiting now."""
        event, self._event = self._event, asyncio.Event()
        self.wakes += 1
        event.set()

    async def attach(self, db: Database) -> None:
        """Listen for pushes made by other replicas (PostgreSQL only)."""
        if db.dialect == "postgresql":
            await db.listen(CHANNEL, self.wake)
