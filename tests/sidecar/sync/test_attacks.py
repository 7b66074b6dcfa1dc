"""The sync client against a hostile or broken server (or a man in the middle).

An answer that never ends, or announces gigabytes, is refused after a bounded read instead
of filling the daemon's memory; any sequence of genuine, replayed, forged and tampered
policy envelopes leaves the newest genuine one in force, never an older one, with the
reason for each refusal stated and the last good one on disk.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import paths as paths_mod
from sidecar.central.enrollment import Enrollment
from sidecar.central.signing import SigningKey
from sidecar.sync import client as client_mod
from sidecar.sync.client import DeviceClient, SyncUnavailable
from sidecar.sync.policy import CentralPolicy, PolicySync, policy_file
from sidecar.sync.settings import SyncConfig

# ------------------------------------------------------------------ answers without end


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[str, list[int]]]:
    """A server on 127.0.0.1 whose policy answer streams JSON-looking bytes for ever (1 MiB
    every 20 ms) and whose usage answer announces a terabyte; (its URL, bytes it sent)."""
    sent = [0]

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"payload": "')
        chunk = b"A" * (1024 * 1024)
        while True:
            await resp.write(chunk)
            sent[0] += len(chunk)
            await asyncio.sleep(0.02)

    async def announced(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "application/json", "content-length": str(10**12)})
        await resp.prepare(request)
        await resp.write(b'{"accepted": 0')
        await asyncio.sleep(60)
        return resp

    async def fine(request: web.Request) -> web.Response:
        return web.json_response({"recorded": True})

    app = web.Application()
    app.router.add_get("/v1/policy", endless)
    app.router.add_post("/v1/usage", announced)
    app.router.add_post("/v1/device/status", fine)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", sent
    await runner.cleanup()


async def test_an_endless_or_announced_huge_answer_is_refused_after_a_bounded_read(hostile: tuple[str, list[int]]) -> None:
    url, sent = hostile
    client = DeviceClient(url, "csd_x")
    try:
        started = time.monotonic()
        with pytest.raises(SyncUnavailable, match="larger than"):
            await asyncio.wait_for(client.policy(None, 1), 4)
        assert sent[0] < 4 * client_mod.MAX_ANSWER  # stopped reading, not read until a timeout
        with pytest.raises(SyncUnavailable, match="larger than"):
            await asyncio.wait_for(client.upload([]), 4)
        assert time.monotonic() - started < 4
        await client.report({"policy_version": 1})  # the client is still usable afterwards
    finally:
        await client.close()


# ------------------------------------------------------------------ envelope sequences

KEY, OTHER = SigningKey.generate(), SigningKey.generate()
DEVICE = "dvc_attacked"
ENROLLMENT = Enrollment("http://127.0.0.1:9", DEVICE, "dev_a", KEY.public_b64, KEY.key_id, 0.0)
KINDS = ("genuine", "other key", "other device", "flipped", "resigned key id", "not an envelope")


def _envelope(kind: str, version: int) -> Any:
    payload = {"device_id": DEVICE, "version": version, "issued_at": 1_000_000.0 + version,
               "policy": {"budget": {"daily_usd": version + 1}}}  # fmt: skip
    if kind == "genuine":
        return KEY.sign(payload)
    if kind == "other key":
        return OTHER.sign(payload)
    if kind == "other device":
        return KEY.sign({**payload, "device_id": "dvc_someone_else"})
    if kind == "flipped":
        env = KEY.sign(payload)
        return {**env, "payload": env["payload"].replace(f'"daily_usd":{version + 1}', f'"daily_usd":{version + 100}')}
    if kind == "resigned key id":
        return {**OTHER.sign(payload), "key_id": KEY.key_id}
    return {"payload": ["not", "text"], "signature": 5}


class Replayer:
    """Stands in for DeviceClient: each long-poll answers the next envelope of a script."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.reports: list[dict[str, Any]] = []

    async def policy(self, after: int | None, wait: float) -> dict[str, Any] | None:
        return self.script.pop(0) if self.script else None

    async def report(self, state: dict[str, Any]) -> None:
        self.reports.append(state)


def _sync(home: Path, client: Replayer, applied: list[CentralPolicy]) -> PolicySync:
    paths = paths_mod.resolve({"CLAUDE_SIDECAR_HOME": str(home)})
    paths.ensure()
    return PolicySync(client, ENROLLMENT, paths, SyncConfig(poll_wait_seconds=1, retry_max_seconds=1),  # type: ignore[arg-type]
                      applied.append, lambda _t, _e: None, jitter=lambda: 0.0)  # fmt: skip


async def _play(script: list[tuple[str, int]], home: Path) -> None:
    client = Replayer([_envelope(kind, v) for kind, v in script])
    applied: list[CentralPolicy] = []
    sync = _sync(home, client, applied)
    held: int | None = None
    for kind, version in script:
        delay = await sync.poll_once()
        await sync._send_report()
        state = sync.state()
        if kind == "genuine" and (held is None or version >= held):
            assert delay == 0 and state["error"] is None, (kind, version, state)
            held = version
        else:
            assert delay > 0 and "was refused" in (state["error"] or ""), (kind, version, state)
            assert client.reports[-1]["policy_error"] == state["error"]
        assert state["version"] == held, (kind, version, held, state)
        assert [cp.version for cp in applied] == sorted({cp.version for cp in applied})  # never back, never twice
    if held is None:
        assert not policy_file(_paths(home)).exists()
        return
    saved = json.loads(policy_file(_paths(home)).read_text())
    assert json.loads(saved["envelope"]["payload"])["version"] == held
    again: list[CentralPolicy] = []
    restarted = _sync(home, Replayer([]), again)
    loaded = restarted.load_last_good()
    assert loaded is not None and loaded.version == held and loaded.document == {"budget": {"daily_usd": held + 1}}


def _paths(home: Path) -> paths_mod.Paths:
    return paths_mod.resolve({"CLAUDE_SIDECAR_HOME": str(home)})


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(script=st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 12)), min_size=1, max_size=12))
def test_any_sequence_of_replayed_forged_and_tampered_envelopes_keeps_the_newest_genuine(script: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as home:
        asyncio.run(_play(script, Path(home)))
