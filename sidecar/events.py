"""An in-process event bus: request events fan out to the control API's SSE subscribers."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any


class EventBus:
    """Publishes events to every subscriber without ever blocking the publisher.

    A subscriber that falls behind loses its oldest events (and is told how many), so a
    stuck TUI can never hold back a request.
    """

    def __init__(self, queue_size: int = 1000) -> None:
        self._subs: set[asyncio.Queue[dict[str, Any]]] = set()
        self._size = queue_size
        self._seq = itertools.count(1)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send an event of type `kind` to every subscriber."""
        if not self._subs:
            return
        event = {"seq": next(self._seq), "type": kind, "data": data}
        for q in self._subs:
            if q.full():
                q.get_nowait()
                q.put_nowait({"seq": 0, "type": "dropped", "data": {"count": 1}})
                continue
            q.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A new queue that receives every event from now on."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._size)
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop delivering to `q`."""
        self._subs.discard(q)

    @property
    def subscribers(self) -> int:
        """How many subscribers are listening."""
        return len(self._subs)
