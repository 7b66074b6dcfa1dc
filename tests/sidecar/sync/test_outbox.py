"""The usage outbox: every ledger row written while enrolled is queued in the same
transaction (writer batches and journal recovery alike), uploaded to a real central server,
and counted there exactly once, through a server outage, lost acknowledgements and SIGKILLs."""

from __future__ import annotations

import asyncio
import functools
import math
import os
import random
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.ledger.journal import Journal, usage_line
from sidecar.ledger.pricing import Pricing
from sidecar.ledger.record import USAGE_COLUMNS, UsageRecord
from sidecar.ledger.store import open_db
from sidecar.ledger.writer import Ledger
from sidecar.sync.client import DeviceClient
from sidecar.sync.outbox import Uploader
from sidecar.sync.settings import SyncConfig
from sidecar.tasks import TaskSet
from sidecar.testing.central import CentralProcess
from sidecar.testing.factories import usage_record

ROOT = Path(__file__).resolve().parents[3]
CHILD = Path(__file__).with_name("outbox_child.py")
FAST = SyncConfig(upload_interval_seconds=0.05, upload_batch=50, retry_max_seconds=1.0)


def rec(i: int, model: str | None = "claude-opus-4-8", **kw: Any) -> UsageRecord:
    """A varied usage row (some without a model, as count_tokens and early errors are)."""
    return usage_record(None, model or "x", requested_model=model, upstream_model=model if i % 3 else None,
                        input_tokens=100 + i, output_tokens=i % 50, cache_read_tokens=i % 7 * 10,
                        route="default" if i % 2 else None, **kw)  # fmt: skip


def outbox_ids(db_file: Path) -> list[str]:
    db = open_db(db_file)
    try:
        return [r[0] for r in db.execute("SELECT usage_id FROM outbox ORDER BY seq")]
    finally:
        db.close()


def ledger_rows(db_file: Path) -> dict[str, tuple[Any, ...]]:
    """id -> (input, output, cache_read, cache_write, cost) of every ledger row."""
    db = open_db(db_file)
    try:
        sql = "SELECT id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd FROM usage"
        return {r[0]: tuple(r[1:]) for r in db.execute(sql)}
    finally:
        db.close()


async def until(done: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait (bounded) until `done()` holds."""
    for _ in range(int(seconds / 0.02)):
        if done():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not reached in {seconds} s")


async def write(db_file: Path, records: list[UsageRecord]) -> None:
    led = Ledger(db_file, Pricing())
    await led.start()
    for r in records:
        led.record(r)
    await led.close()


# ---------------------------------------------------------------------------- the trigger


async def test_rows_are_queued_only_while_sync_is_on(tmp_path: Path) -> None:
    db_file = tmp_path / "s.db"
    await write(db_file, [rec(i) for i in range(5)])
    assert outbox_ids(db_file) == []  # not enrolled: no outbox growth
    Uploader.enable(db_file)
    Uploader.enable(db_file)  # idempotent
    on = [rec(i) for i in range(7)]
    await write(db_file, on)
    assert outbox_ids(db_file) == [r.id for r in on]
    Uploader.disable(db_file)
    assert outbox_ids(db_file) == []
    await write(db_file, [rec(i) for i in range(3)])
    assert outbox_ids(db_file) == []
    assert len(ledger_rows(db_file)) == 15


async def test_a_replayed_row_is_not_queued_twice(tmp_path: Path) -> None:
    """The writer's INSERT OR IGNORE and the journal's replay of rows already in sqlite do
    not queue them again; rows only in the journal are queued once, with the count right."""
    db_file = tmp_path / "s.db"
    Uploader.enable(db_file)
    written = [rec(i) for i in range(4)]
    await write(db_file, written)
    await write(db_file, written)  # the same ids again: ignored
    assert outbox_ids(db_file) == [r.id for r in written]
    journal_only = [rec(i) for i in range(3)]
    jdir = tmp_path / "journal"
    jdir.mkdir()
    lines = [usage_line([getattr(r, c) for c in USAGE_COLUMNS]) for r in [*written, *journal_only]]
    (jdir / "00000001.journal").write_bytes(b"".join(lines))
    found = Journal(jdir).recover(db_file)
    assert found.usage == 3
    assert outbox_ids(db_file) == [r.id for r in [*written, *journal_only]]
    # Uploaded and acknowledged rows leave the outbox; a later replay does not bring them back.
    db = open_db(db_file)
    with db.atomic():
        db.execute("DELETE FROM outbox")
    db.close()
    (jdir / "00000002.journal").write_bytes(b"".join(lines))
    assert Journal(jdir).recover(db_file).usage == 0
    assert outbox_ids(db_file) == []


# ---------------------------------------------------------------------------- a central server


class Proxy:
    """A TCP proxy on loopback in front of the central server: `target` None refuses (the
    server is down); while `drop` > 0 the next answers are swallowed after the server sent
    them (it committed the batch; the device never hears so); `delay` holds traffic back."""

    def __init__(self) -> None:
        self.target: tuple[str, int] | None = None
        self.drop = 0
        self.dropped = 0
        self.delay = 0.0  # seconds each chunk is held back (an upload is in flight most of the time)
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.target is None:
                raise OSError("down")
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, uw}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool) -> None:
            try:
                while chunk := await src.read(65536):
                    if self.delay:  # both ways: a kill lands before the server has it, or before its answer
                        await asyncio.sleep(self.delay)
                        if not answers and (src.at_eof() or src.exception() is not None):
                            break  # the device died meanwhile: its request never reaches the server
                    if answers and self.drop > 0:
                        self.drop -= 1
                        self.dropped += 1
                        break
                    dst.write(chunk)
                    await dst.drain()
            except OSError:
                pass
            finally:
                writer.close()
                uw.close()

        await asyncio.gather(pipe(reader, uw, False), pipe(ur, writer, True))


@dataclass
class Server:
    """A central server (a child process, SQLite) behind a proxy, with one enrolled device."""

    db_file: Path
    proxy: Proxy
    process: CentralProcess
    admin: str = ""
    credential: str = ""

    async def restart(self) -> None:
        """Start the server again on the same database (after `stop()`)."""
        self.process = CentralProcess(f"sqlite:///{self.db_file}")
        await self.process.__aenter__()
        self.proxy.target = ("127.0.0.1", int(self.process.url.rsplit(":", 1)[1]))

    async def stop(self) -> None:
        self.proxy.target = None
        await self.process.stop()

    def rows(self) -> dict[str, tuple[Any, ...]]:
        """id -> (input, output, cache_read, cache_write, cost) of every record it holds."""
        conn = sqlite3.connect(f"file:{self.db_file}?mode=ro", uri=True)
        try:
            sql = "SELECT id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd FROM usage"
            return {r[0]: tuple(r[1:]) for r in conn.execute(sql)}
        finally:
            conn.close()

    def client(self) -> DeviceClient:
        return DeviceClient(self.proxy.url, self.credential)


async def _call(url: str, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(method, url + path, json=body, headers=headers) as r:
        answer = await r.json(content_type=None)
        assert r.status < 300, (r.status, answer)
        return answer


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    proxy = Proxy()
    await proxy.start()
    srv = Server(tmp_path / "central.db", proxy, CentralProcess(""))
    await srv.restart()
    try:
        assert srv.process.bootstrap_token
        srv.admin = srv.process.bootstrap_token
        url = srv.process.url
        await _call(url, "POST", "/v1/admin/developers", srv.admin, {"email": "ada@example.com"})
        enr = await _call(url, "POST", "/v1/admin/enrollment-tokens", srv.admin, {"developer": "ada@example.com"})
        srv.credential = (await _call(url, "POST", "/v1/enroll", None, {"token": enr["token"], "name": "laptop"}))["credential"]
        yield srv
    finally:
        await srv.process.stop()
        await proxy.close()


def assert_same_totals(ledger: dict[str, tuple[Any, ...]], server: dict[str, tuple[Any, ...]]) -> None:
    """Every ledger row on the server once, with its tokens and cost; the totals equal exactly."""
    assert ledger.keys() == server.keys()
    assert ledger == server
    for i in range(4):
        assert sum(r[i] for r in server.values()) == sum(r[i] for r in ledger.values())
    assert math.fsum(r[4] for r in server.values()) == math.fsum(r[4] for r in ledger.values())


def uploader(db_file: Path, client: DeviceClient, events: list[tuple[str, dict[str, Any]]] | None = None) -> Uploader:
    return Uploader(db_file, client, FAST, lambda k, d: (events if events is not None else []).append((k, d)))


# ---------------------------------------------------------------------------- uploads


async def test_rows_written_by_a_ledger_are_uploaded_exactly_once(tmp_path: Path, server: Server) -> None:
    db_file = tmp_path / "s.db"
    Uploader.enable(db_file)
    records = [rec(i, model=None if i % 10 == 0 else "claude-opus-4-8") for i in range(237)]
    await write(db_file, records)
    client = server.client()
    up = uploader(db_file, client)
    try:
        await asyncio.wait_for(up.drain(), 30)
        await asyncio.wait_for(up.drain(), 30)  # nothing left: nothing sent again
    finally:
        await up.close()
        await client.close()
    assert up.state()["backlog"] == 0 and up.state()["uploaded_total"] == 237 and up.state()["duplicates"] == 0
    assert outbox_ids(db_file) == []
    assert_same_totals(ledger_rows(db_file), server.rows())
    report = await _call(server.process.url, "GET", "/v1/admin/usage?by=model", server.admin)
    by_model = {r["key"]: r["requests"] for r in report["rows"]}
    assert by_model == {"claude-opus-4-8": 213, "unknown": 24}  # no model named: "unknown", never empty


async def test_server_down_backlog_grows_then_drains_to_equal_totals(tmp_path: Path, server: Server) -> None:
    db_file = tmp_path / "s.db"
    Uploader.enable(db_file)
    await write(db_file, [rec(i) for i in range(30)])
    client = server.client()
    up = uploader(db_file, client)
    tasks = TaskSet()
    tasks.spawn(up.run(), name="uploader")
    led = Ledger(db_file, Pricing())
    await led.start()
    try:
        await until(lambda: up.state()["backlog"] == 0)
        await server.stop()
        for burst in range(1, 5):
            for i in range(40):
                led.record(rec(burst * 40 + i))
            await led.flush()
            await until(functools.partial(lambda n: up.state()["backlog"] == n, burst * 40))  # seen at the next attempt, offline too
        assert len(outbox_ids(db_file)) == 160 and server.rows().keys() <= ledger_rows(db_file).keys()
        assert up.state()["last_error"] and "cannot reach" in up.state()["last_error"]
        await server.restart()
        await until(lambda: up.state()["backlog"] == 0, 30)
        assert up.state()["last_error"] is None
    finally:
        await tasks.close()
        await led.close()
        await client.close()
    assert_same_totals(ledger_rows(db_file), server.rows())
    assert len(server.rows()) == 190


async def test_a_lost_acknowledgement_does_not_count_twice(tmp_path: Path, server: Server) -> None:
    """The server commits a batch but its answer never arrives (the device crashed, or the
    network cut): the batch is sent again, the server calls it duplicates, it counts once."""
    db_file = tmp_path / "s.db"
    Uploader.enable(db_file)
    await write(db_file, [rec(i) for i in range(180)])
    server.proxy.drop = 3
    client = server.client()
    up = uploader(db_file, client)
    try:
        await asyncio.wait_for(up.drain(), 30)
    finally:
        await up.close()
        await client.close()
    assert server.proxy.dropped == 3
    assert up.state()["duplicates"] > 0  # the re-sent batches were recognised
    assert_same_totals(ledger_rows(db_file), server.rows())


async def test_a_conflicting_id_is_parked_not_retried(tmp_path: Path, server: Server) -> None:
    db_file = tmp_path / "s.db"
    Uploader.enable(db_file)
    records = [rec(i) for i in range(20)]
    await write(db_file, records)
    taken = {"id": records[3].id, "ts": records[3].ts, "model": "other", "cost_usd": 1.0}
    await _call(server.process.url, "POST", "/v1/usage", server.credential, {"records": [taken]})
    client = server.client()
    up = uploader(db_file, client)
    try:
        await asyncio.wait_for(up.drain(), 30)
        await asyncio.wait_for(up.drain(), 30)
    finally:
        await up.close()
        await client.close()
    assert up.state()["conflicts"] == 1 and up.state()["backlog"] == 0 and up.state()["uploaded_total"] == 19
    rows = server.rows()
    assert rows.pop(records[3].id)[4] == 1.0  # the server's record stands
    ledger = ledger_rows(db_file)
    del ledger[records[3].id]
    assert_same_totals(ledger, rows)


async def test_a_revoked_device_stops_uploading(tmp_path: Path, server: Server) -> None:
    db_file = tmp_path / "s.db"
    Uploader.enable(db_file)
    await write(db_file, [rec(i) for i in range(5)])
    devices = await _call(server.process.url, "GET", "/v1/admin/devices", server.admin)
    for d in devices["devices"]:
        await _call(server.process.url, "DELETE", f"/v1/admin/devices/{d['id']}", server.admin)
    events: list[tuple[str, dict[str, Any]]] = []
    client = server.client()
    up = uploader(db_file, client, events)
    try:
        await asyncio.wait_for(up.run(), 30)  # returns: it does not retry a revoked credential
    finally:
        await client.close()
    assert up.state()["stopped"] and "no longer accepts" in up.state()["stopped"]
    assert events and events[-1][1]["stopped"]
    assert len(outbox_ids(db_file)) == 5 and server.rows() == {}


# ---------------------------------------------------------------------------- SIGKILL


async def _child(db_file: Path, server: Server, seed: int, mode: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), str(db_file), server.proxy.url, server.credential, str(seed), mode,
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def test_sigkill_during_uploads_loses_and_duplicates_nothing(tmp_path: Path, server: Server) -> None:
    """A child process records rows continuously (journaled) while its Uploader uploads them;
    it is SIGKILLed at random points, several times, and restarted (the journal's rows are
    recovered and queued). Afterwards everything drains and the server holds exactly the
    ledger: every row once, the same token sums and cost."""
    db_file = tmp_path / "data" / "s.db"
    rnd = random.Random(1915)
    server.proxy.delay = 0.05

    for kill in range(4):
        proc = await _child(db_file, server, kill, "write")
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                while True:  # until this run's uploader has had batches acknowledged
                    line = (await proc.stdout.readline()).decode()
                    assert line, "the child exited"
                    if int(line.split()[1]) > 0:
                        break
                await asyncio.sleep(rnd.uniform(0.05, 0.6))
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
    uploaded_before = len(server.rows())
    assert uploaded_before > 0
    proc = await _child(db_file, server, 0, "drain")
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0 and out.decode().strip() == "drained"
    assert outbox_ids(db_file) == []
    ledger = ledger_rows(db_file)
    assert len(ledger) > uploaded_before  # the last kill left rows in the outbox or the journal
    assert_same_totals(ledger, server.rows())


async def test_a_record_the_server_cannot_take_is_parked_alone(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row that is not a valid record is parked before sending; one the server refuses
    (400 for the whole batch) is found by splitting the batch and parked; the rest go up."""
    from sidecar.sync import outbox

    db_file = tmp_path / "s.db"
    Uploader.enable(db_file)
    records = [rec(i) for i in range(40)]
    records[5].id = "not-a-ulid"  # refused by the server (the local check is off below)
    records[30].input_tokens = -3  # refused locally
    await write(db_file, records)
    monkeypatch.setattr(outbox, "_ULID", re.compile(".+"))
    client = server.client()
    up = uploader(db_file, client)
    try:
        await asyncio.wait_for(up.drain(), 30)
    finally:
        await up.close()
        await client.close()
    assert up.state()["conflicts"] == 2 and up.state()["backlog"] == 0 and up.state()["uploaded_total"] == 38
    db = open_db(db_file)
    parked = {r[0]: r[1] for r in db.execute("SELECT usage_id, reason FROM outbox_parked")}
    db.close()
    assert parked.keys() == {"not-a-ulid", records[30].id}
    assert parked["not-a-ulid"].startswith("refused: ") and "ULID" in parked["not-a-ulid"]
    assert parked[records[30].id].startswith("invalid: input_tokens")
    ledger = ledger_rows(db_file)
    for i in parked:
        del ledger[i]
    assert_same_totals(ledger, server.rows())


async def test_an_unreachable_server_is_retried_with_growing_jittered_waits(tmp_path: Path, server: Server) -> None:
    db_file = tmp_path / "s.db"
    Uploader.enable(db_file)
    await write(db_file, [rec(i) for i in range(3)])
    await server.stop()
    client = server.client()
    up = uploader(db_file, client)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    up._sleep = sleep
    try:
        for _ in range(8):
            assert await up._attempt() is None
    finally:
        await up.close()
        await client.close()
    ceilings = [min(FAST.retry_max_seconds, 0.5 * 2**i) for i in range(8)]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
    assert len(set(waits[3:])) == 5  # capped, and still spread out
    assert up.state()["backlog"] == 3 and "cannot reach" in up.state()["last_error"]
