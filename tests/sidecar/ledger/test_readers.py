"""Readers in other processes (`claude-sidecar usage`, `audit verify`) never hide or lose the
daemon's records: the daemon holds its SQLite locks for as long as its connections live."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar import paths
from sidecar.paths import Paths
from sidecar.testing.cli import cli
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import ChildSidecar, anthropic_config

BODY = {"model": "claude-opus-4-8", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}


def ledger_count(db_file: Path) -> int:
    """The ledger's row count as another process sees it (a plain read-write connection,
    opened and closed like `claude-sidecar usage` does)."""
    conn = sqlite3.connect(str(db_file), timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM usage").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


async def wait_rows(db_file: Path, n: int, within: float = 8.0) -> int:
    """Poll (from this process) until the ledger holds `n` rows; return what it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    got = 0
    while loop.time() < deadline:
        got = await asyncio.to_thread(ledger_count, db_file)
        if got >= n:
            return got
        await asyncio.sleep(0.05)
    return got


async def test_usage_in_another_process_does_not_hide_later_records(
    daemon: ChildSidecar, client: aiohttp.ClientSession
) -> None:
    p: Paths = paths.resolve({"CLAUDE_SIDECAR_HOME": str(daemon.home)})
    auth = {"Authorization": f"Bearer {daemon.token}"}
    async with client.post(daemon.url + "/v1/messages", json=BODY) as resp:
        assert resp.status == 200
    assert await wait_rows(p.db_file, 1) == 1

    code, out, err = await cli("usage", "--json")
    assert code == 0, err
    assert sum(r["requests"] for r in json.loads(out)) == 1

    for _ in range(2):
        async with client.post(daemon.url + "/v1/messages", json=BODY) as resp:
            assert resp.status == 200
        async with client.get(daemon.url + "/sidecar/v1/status", headers=auth) as resp:
            assert resp.status == 200, await resp.text()  # the daemon's own reads still work
    assert await wait_rows(p.db_file, 3) == 3
    code, out, err = await cli("usage", "--json")
    assert code == 0, err
    assert sum(r["requests"] for r in json.loads(out)) == 3
    code, out, err = await cli("audit", "verify")
    assert code == 0, out + err

    # Killed now, the daemon loses nothing that was already written.
    daemon.proc.kill()
    daemon.proc.wait(10)
    assert ledger_count(p.db_file) == 3


async def test_the_daemon_never_opens_a_plain_descriptor_on_its_store(
    hermetic_env: Path, fake: FakeAnthropic, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing any descriptor of the store (or its -wal/-shm) drops the process's sqlite
    locks: from start to stop, through requests and every control-API read, the daemon's
    Python code opens none (sqlite opens its files itself, below Python)."""
    import builtins

    from sidecar.testing.harness import sidecar_in_process

    db_file = paths.resolve({"CLAUDE_SIDECAR_HOME": str(hermetic_env)}).db_file
    store = {db_file.name, f"{db_file.name}-wal", f"{db_file.name}-shm"}
    opened: list[str] = []
    real_os_open, real_open = os.open, builtins.open

    # A descriptor on a file that exists (creating the store, before any connection, is fine;
    # an O_EXCL open refused because it exists makes no descriptor).
    def os_open(path: Any, *args: Any, **kwargs: Any) -> int:
        existed = os.path.exists(path)
        fd = real_os_open(path, *args, **kwargs)
        if existed:
            opened.append(os.fsdecode(path))
        return fd

    def py_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        existed = isinstance(file, str | bytes | os.PathLike) and os.path.exists(file)
        f = real_open(file, *args, **kwargs)
        if existed:
            opened.append(os.fsdecode(file))  # type: ignore[arg-type]
        return f

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", py_open)
    probe = hermetic_env.parent / "probe"
    probe.write_text("")
    os.close(os.open(probe, os.O_RDONLY))
    assert opened == [str(probe)]  # the spy sees opens of existing files
    opened.clear()
    async with sidecar_in_process(anthropic_config(fake.url), hermetic_env) as sc:
        auth = {"Authorization": f"Bearer {sc.token}"}
        for stream in (False, True):
            async with client.post(sc.url + "/v1/messages", json={**BODY, "stream": stream}) as resp:
                assert resp.status == 200
                await resp.read()
        for path in ("/status", "/usage?group_by=daily", "/usage?group_by=model", "/routes", "/cache", "/policy"):
            async with client.get(sc.url + "/sidecar/v1" + path, headers=auth) as resp:
                assert resp.status == 200, path
    assert db_file.exists()
    assert [p for p in opened if Path(p).name in store] == []
