"""Storage that fails under a running daemon: a full disk shows on /healthz and in `status`,
new requests are refused with a 503 envelope while usage cannot be recorded, the records
waiting in memory are written once space returns, and a store that cannot be opened at
start is one clear line, not a traceback.

The full disk is real to the daemon: its file-size limit (RLIMIT_FSIZE, set from outside
with prlimit) makes every write that extends a file fail, as ENOSPC would. A read-only data
dir is a read-only bind mount in a private mount namespace (skipped where `unshare` is not
allowed)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.config import parse
from sidecar.errors import ConfigError
from sidecar.testing.cli import cli
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import ChildSidecar, anthropic_config, start_child
from sidecar.testing.requirements import needs_platform

BODY = {"model": "claude-opus-4-8", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}


def rows(db_file: Path) -> set[str]:
    conn = sqlite3.connect(str(db_file), timeout=10)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM usage")}
    finally:
        conn.close()


async def healthz(client: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with client.get(url + "/healthz") as resp:
        assert resp.status == 200
        out: dict[str, Any] = await resp.json()
        return out


async def until(client: aiohttp.ClientSession, url: str, ok: bool, pending: int | None = None, within: float = 20) -> dict[str, Any]:
    """Poll /healthz until its storage state is `ok` (and has `pending` records)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        storage: dict[str, Any] = (await healthz(client, url))["storage"]
        if storage["ok"] is ok and (pending is None or storage["pending"] == pending):
            return storage
        assert loop.time() < deadline, storage
        await asyncio.sleep(0.1)


async def test_a_full_disk_is_reported_refused_and_recovered(
    daemon: ChildSidecar, client: aiohttp.ClientSession
) -> None:
    db_file = daemon.home / "data" / "sidecar.db"
    served: list[str] = []

    async def post() -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
        async with client.post(daemon.url + "/v1/messages", json=BODY) as resp:
            body = await resp.json()
            if resp.status == 200:
                served.append(resp.headers["x-sidecar-request-id"])
            return resp.status, body, resp.headers

    for _ in range(3):
        assert (await post())[0] == 200
    assert (await until(client, daemon.url, ok=True, pending=0)) == {"ok": True, "pending": 0, "error": None, "warning": None}

    hard = resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (0, hard))  # the disk is full
    try:
        # Admitted while storage still looked fine: served, its records wait in memory.
        assert (await post())[0] == 200
        storage = await until(client, daemon.url, ok=False)
        assert storage["pending"] >= 1 and "journal" in storage["error"], storage
        code, out, err = await cli("status")
        assert code == 0, err
        assert "storage: DEGRADED, usage is not being recorded" in out, out
        code, out, err = await cli("status", "--json")
        assert json.loads(out)["storage"]["ok"] is False

        status, body, headers = await post()
        assert status == 503
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
        assert "usage cannot be recorded" in body["error"]["message"]
        assert headers["retry-after"] == "5"
    finally:
        resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))

    # Space is back: the waiting records are written, and requests are served again.
    await until(client, daemon.url, ok=True, pending=0)
    assert (await post())[0] == 200
    await until(client, daemon.url, ok=True, pending=0)
    assert rows(db_file) == set(served)  # every answered request, none of the refused one
    code, out, err = await cli("audit", "verify")
    assert code == 0, out + err


def private_data_dir(home: Path) -> Path:
    """`home/data`, both private (0700) as the daemon would make them."""
    (home / "data").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    return home / "data"


async def test_a_store_that_cannot_be_opened_is_one_clear_line(hermetic_env: Path) -> None:
    private_data_dir(hermetic_env)
    (hermetic_env / "data" / "sidecar.db").write_bytes(b"this is not a database, " * 10)
    code, _, err = await cli("start", "--foreground")
    assert code == 1
    assert "Traceback" not in err, err
    assert err.splitlines()[-1] == f"error: cannot open the usage store in {hermetic_env / 'data'}: file is not a database"


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


@needs_platform(_unshare_works(), "needs a private mount namespace (unshare -rm)")
async def test_a_read_only_data_dir_at_start_is_one_clear_line(hermetic_env: Path) -> None:
    data = private_data_dir(hermetic_env)
    script = f'mount --bind "{data}" "{data}" && mount -o remount,ro,bind "{data}" "{data}" && exec "{sys.executable}" -m sidecar start --foreground'
    proc = await asyncio.create_subprocess_exec(
        "unshare", "-rm", "sh", "-c", script,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    text = err.decode()
    assert "Traceback" not in text, text
    last = text.splitlines()[-1]
    assert last.startswith(f"error: cannot open the usage store in {data}: ") and "Read-only file system" in last, text


def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(tempfile.mkdtemp())
    try:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True).returncode:
            return False
        subprocess.run(["umount", str(probe)], capture_output=True)
        return True
    finally:
        probe.rmdir()


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it."""
    filler = directory / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


@needs_platform(_can_mount(), "needs root to mount a tiny tmpfs")
async def test_a_really_full_file_system(hermetic_env: Path, fake: FakeAnthropic, client: aiohttp.ClientSession) -> None:
    """The data dir on a 2 MB tmpfs, filled up under the running daemon: ENOSPC as a user
    meets it. Degraded is reported, new requests are refused, nothing answered is lost."""
    data = private_data_dir(hermetic_env)
    await asyncio.to_thread(subprocess.run, ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(data)], check=True)
    child = None
    try:
        child = await asyncio.to_thread(start_child, hermetic_env, anthropic_config(fake.url))
        served: list[str] = []

        async def post() -> int:
            async with client.post(child.url + "/v1/messages", json=BODY) as resp:
                await resp.read()
                if resp.status == 200:
                    served.append(resp.headers["x-sidecar-request-id"])
                return resp.status

        assert await post() == 200
        await until(client, child.url, ok=True, pending=0)
        filler = await asyncio.to_thread(fill, data)
        for _ in range(200):  # the last pages of the journal and the WAL still take a few
            if await post() == 503:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("requests were never refused on a full file system")
        storage = (await healthz(client, child.url))["storage"]
        assert storage["ok"] is False and storage["pending"] >= 1, storage
        assert "No space left on device" in storage["error"] or "full" in storage["error"], storage

        await asyncio.to_thread(filler.unlink)
        await until(client, child.url, ok=True, pending=0)
        assert await post() == 200
        await until(client, child.url, ok=True, pending=0)
        assert rows(data / "sidecar.db") == set(served)
    finally:
        if child is not None:
            child.proc.kill()
            await asyncio.to_thread(child.proc.wait)
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(data)], capture_output=True)


async def test_serve_mode_serves_through_a_full_disk_and_writes_later(
    hermetic_env: Path, fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    config = anthropic_config(fake.url) + '\n[usage]\non_storage_failure = "serve"\n'
    child = await asyncio.to_thread(start_child, hermetic_env, config)
    try:
        served: list[str] = []
        hard = resource.prlimit(child.proc.pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(child.proc.pid, resource.RLIMIT_FSIZE, (0, hard))
        try:
            for _ in range(3):
                async with client.post(child.url + "/v1/messages", json=BODY) as resp:
                    assert resp.status == 200  # degraded, and served all the same
                    served.append(resp.headers["x-sidecar-request-id"])
            storage = await until(client, child.url, ok=False)
            assert storage["pending"] >= 1
        finally:
            resource.prlimit(child.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))
        await until(client, child.url, ok=True, pending=0)
        assert rows(hermetic_env / "data" / "sidecar.db") == set(served)
    finally:
        child.proc.kill()
        await asyncio.to_thread(child.proc.wait)


def test_on_storage_failure_takes_refuse_or_serve() -> None:
    assert parse("").usage.on_storage_failure == "refuse"
    assert parse('[usage]\non_storage_failure = "serve"\n').usage.on_storage_failure == "serve"
    with pytest.raises(ConfigError, match=r"usage\.on_storage_failure: 'maybe' is not one of refuse, serve"):
        parse('[usage]\non_storage_failure = "maybe"\n')
