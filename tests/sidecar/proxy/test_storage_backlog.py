"""The storage gate holds new requests while too many records wait for SQLite (the writer
thread fell behind a busy event loop), so the backlog and the memory it holds stay bounded;
it refuses only when storage has failed, and never holds a request for longer than its cap."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from sidecar.errors import StorageUnavailable
from sidecar.pipeline import RequestContext
from sidecar.protocol.anthropic import RequestHead
from sidecar.proxy import stages
from sidecar.proxy.stages import StorageGate
from sidecar.tasks import TaskSet


@dataclass
class Backlog:
    """A storage health whose backlog a test drains."""

    pending: int = 0
    error: str | None = None
    refuse: bool = True
    seen: list[int] = field(default_factory=list)


def ctx() -> RequestContext:
    return RequestContext("/v1/messages", b"{}", RequestHead(), None, None)


async def test_a_request_waits_while_the_backlog_is_over_the_limit() -> None:
    health = Backlog(pending=101)
    gate = StorageGate(health, backlog_limit=100)  # type: ignore[arg-type]
    tasks = TaskSet()
    task = tasks.spawn(gate.on_request(ctx()), name="held-request")
    await asyncio.sleep(0.05)
    assert not task.done()  # held while 101 wait
    health.pending = 60
    await asyncio.sleep(0.05)
    assert not task.done()  # still above half the limit
    health.pending = 50
    assert await asyncio.wait_for(task, 1) is None
    assert gate.held == 1


async def test_under_the_limit_nothing_waits_and_a_failure_still_refuses() -> None:
    health = Backlog(pending=100)
    gate = StorageGate(health, backlog_limit=100)  # type: ignore[arg-type]
    assert await asyncio.wait_for(gate.on_request(ctx()), 0.5) is None
    assert gate.held == 0
    health.pending, health.error = 10_000, "ledger: disk I/O error"
    with pytest.raises(StorageUnavailable):
        await gate.on_request(ctx())


async def test_a_held_request_goes_on_after_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stages, "BACKLOG_WAIT_SECONDS", 0.05)
    gate = StorageGate(Backlog(pending=10_000), backlog_limit=100)  # type: ignore[arg-type]
    assert await asyncio.wait_for(gate.on_request(ctx()), 1) is None
    assert gate.held == 1
