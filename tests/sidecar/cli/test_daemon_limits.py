"""The daemon process under pressure and at its edges: a low open-file limit with many slow
clients, a shutdown whose grace is the total and that resets the streams still open, log
lines with UTC timestamps, loud warnings for a listener beyond loopback, private files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import resource
import signal
import stat
import time
from pathlib import Path

import aiohttp
import pytest

from sidecar import paths
from sidecar.daemon_state import load_or_create_token
from sidecar.testing.cli import cli
from sidecar.testing.fake_anthropic import FakeAnthropic, StallMidStream
from sidecar.testing.harness import anthropic_config, start_child
from sidecar.testing.requirements import needs_platform

BODY = {"model": "claude-opus-4-8", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
FD_LIMIT = 1024
SLOW_CLIENTS = 1000


def _low_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, hard))


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@needs_platform(Path("/proc/self/fd").exists(), "counts descriptors through /proc")
async def test_a_thousand_slow_clients_under_a_1024_fd_limit_cannot_starve_healthz(
    hermetic_env: Path, fake: FakeAnthropic
) -> None:
    # The clients need descriptors of their own: raise this process's soft limit (the hard one allows it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = SLOW_CLIENTS + 200
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.fail(f"the test needs {want} descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    config = anthropic_config(fake.url, "\n[server]\nheader_timeout_seconds = 2\nshutdown_grace_seconds = 1\n")
    child = await asyncio.to_thread(start_child, hermetic_env, config, None, 20.0, _low_fd_limit)
    port = int(child.url.rsplit(":", 1)[1])
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(SLOW_CLIENTS):  # each sends half a head, then nothing
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append((r, w))
        async with aiohttp.ClientSession() as client:
            async with client.get(child.url + "/healthz") as resp:
                assert resp.status == 200
            async with client.post(child.url + "/v1/messages", json=BODY, headers={"x-api-key": "k"}) as resp:
                assert resp.status == 200
        assert _open_fds(child.proc.pid) < FD_LIMIT
        for r, _ in slow:  # none of them is held: each is answered 408 or closed to make room
            async with asyncio.timeout(20):
                await r.read()
        log = (hermetic_env / "child.log").read_text()
        assert "EMFILE" not in log and "Too many open files" not in log, log[-2000:]
    finally:
        for _, w in slow:
            w.close()
        assert child.stop() == 0


async def test_sigterm_grace_is_the_total_and_streams_left_open_are_reset(
    hermetic_env: Path, fake: FakeAnthropic
) -> None:
    grace = 1.0
    fake.script(StallMidStream(after_events=3, seconds=20))
    config = anthropic_config(fake.url, f"\n[server]\nshutdown_grace_seconds = {grace}\n")
    child = await asyncio.to_thread(start_child, hermetic_env, config)
    port = int(child.url.rsplit(":", 1)[1])
    body = json.dumps({**BODY, "stream": True}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: k\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        received = b""
        async with asyncio.timeout(10):
            while b"message_start" not in received:
                received += await reader.read(65536)
        child.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        reset = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace + 10):
                try:
                    while chunk := await reader.read(65536):
                        received += chunk
                except ConnectionResetError:
                    reset = True
        # A clean end (FIN) would let Claude Code take the cut stream as a complete answer.
        assert reset, "the stream still open at the end of the grace was closed cleanly, not reset"
        assert b"message_stop" not in received
        rc = await asyncio.to_thread(child.proc.wait, grace + 10)
        # The grace is the whole shutdown (aiohttp alone waited twice the grace, then more).
        assert time.monotonic() - t0 < grace + 4
        assert rc == 0
    finally:
        writer.close()
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()
    lines = [ln for ln in (hermetic_env / "child.log").read_text().splitlines() if " sidecar." in ln]
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) ", ln) for ln in lines), lines
    assert any("reset 1 connections" in ln for ln in lines)


async def test_config_check_warns_loudly_about_a_host_beyond_loopback(hermetic_env: Path) -> None:
    cfg = hermetic_env / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text('[server]\nhost = "0.0.0.0"\n')
    run = await cli("config", "check", env={"CLAUDE_SIDECAR_CONFIG": str(cfg)})
    assert run.rc == 0
    assert "WARNING: server.host = '0.0.0.0' listens beyond this machine" in run.err
    assert "token is required on every request" in run.err
    cfg.write_text('[server]\nhost = "127.0.0.1"\n')
    assert "WARNING" not in (await cli("config", "check", env={"CLAUDE_SIDECAR_CONFIG": str(cfg)})).err


@needs_platform(os.name == "posix", "POSIX modes")
def test_an_open_state_dir_and_token_file_are_tightened_and_logged(
    hermetic_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = paths.resolve()
    p.ensure()
    token = load_or_create_token(p)
    os.chmod(p.state_dir, 0o777)
    os.chmod(p.token_file, 0o666)
    with caplog.at_level(logging.WARNING, logger="sidecar.paths"):
        p.ensure()
        assert load_or_create_token(p) == token
    assert stat.S_IMODE(p.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(p.token_file.stat().st_mode) == 0o600
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "was mode 777" in warned and "was mode 666" in warned



async def test_an_open_event_feed_does_not_hold_up_shutdown(hermetic_env: Path, fake: FakeAnthropic) -> None:
    grace = 20.0
    config = anthropic_config(fake.url, f"\n[server]\nshutdown_grace_seconds = {grace}\n")
    child = await asyncio.to_thread(start_child, hermetic_env, config)
    try:
        async with aiohttp.ClientSession() as client:
            headers = {"Authorization": f"Bearer {child.token}"}
            async with client.get(child.url + "/sidecar/v1/events", headers=headers) as feed:
                assert feed.status == 200
                child.proc.send_signal(signal.SIGTERM)
                t0 = time.monotonic()
                with contextlib.suppress(aiohttp.ClientError):
                    async with asyncio.timeout(grace + 10):
                        async for _ in feed.content:
                            pass
        assert await asyncio.to_thread(child.proc.wait, grace + 10) == 0
        assert time.monotonic() - t0 < grace / 2  # the feed ended with the shutdown event
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()
