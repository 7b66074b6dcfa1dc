"""The daemon as a user runs it: real `python -m sidecar` processes against a fake upstream.

Every CLI call here is a separate process (about a second each, mostly imports), so calls
that do not depend on each other run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from sidecar.cli import cli as cli_group
from sidecar.cli.common import pid_alive
from sidecar.daemon_state import read_state
from sidecar.paths import Paths
from sidecar.testing.cli import cli, wait_gone, write_config
from sidecar.testing.fake_anthropic import FakeAnthropic, StallMidStream
from sidecar.testing.harness import anthropic_config, start_child

SECRET = "sk-ant-api03-injected-by-the-sidecar"
CLIENT_KEY = "sk-ant-api03-the-clients-own-key"
BODY = {"model": "claude-opus-4-8", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
PRINT_URL = "import os; print(os.environ['ANTHROPIC_BASE_URL'])"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def post(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with client.post(url + "/v1/messages", json=BODY, headers=headers or {}) as resp:
        return resp.status, await resp.json()


async def wait_for_usage(client: aiohttp.ClientSession, url: str, token: str, requests: int) -> None:
    """Wait until the ledger has written `requests` requests for today (it writes in batches)."""
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(100):
        async with client.get(url + "/sidecar/v1/status", headers=headers) as resp:
            usage = (await resp.json())["usage"]
        if usage and usage["today"]["requests"] >= requests:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"usage never reached {requests} requests: {usage}")


# ------------------------------------------------------------------ life cycle


async def test_start_status_env_run_stop(home: Paths, fake: FakeAnthropic, client: aiohttp.ClientSession) -> None:
    write_config(home, "[server]\nport = 0\n\n" + anthropic_config(fake.url))

    started = await cli("start")

    assert started.rc == 0, started.err
    state = read_state(home)
    assert state is not None
    url, pid = state["url"], state["pid"]
    assert url.startswith("http://127.0.0.1:")
    assert pid_alive(pid)
    assert os.getsid(pid) == pid  # daemonised: its own session, outliving `start`
    assert f"is running at {url} (pid {pid})" in started.out
    assert "claude-sidecar run -- claude" in started.out
    assert 'eval "$(claude-sidecar env)"' in started.out
    async with client.get(url + "/healthz") as resp:  # healthy the moment start returns
        assert resp.status == 200
    assert mode(home.token_file) == 0o600
    assert mode(home.state_dir) == 0o700
    token = home.token_file.read_text().strip()

    # Forwarding mode: the client's own key goes upstream untouched.
    code, body = await post(client, url, {"x-api-key": CLIENT_KEY})
    assert code == 200, body
    assert fake.requests[-1].header("x-api-key") == CLIENT_KEY
    await wait_for_usage(client, url, token, 1)

    again, text, as_json, sh, fish, pwsh, run, missing = await asyncio.gather(
        cli("start"),
        cli("status"),
        cli("status", "--json"),
        cli("env"),
        cli("env", "--shell", "fish"),
        cli("env", "--shell", "powershell"),
        cli("run", "--", sys.executable, "-c", PRINT_URL),
        cli("run", "--", "no-such-command-for-the-sidecar"),
    )

    assert again.rc == 0
    assert f"was already running at {url} (pid {pid})" in again.out
    assert read_state(home) == state  # no second daemon

    assert text.rc == 0, text.err
    assert f"running at {url} (pid {pid}," in text.out
    assert "in 1 requests" in text.out
    data = json.loads(as_json.out)
    assert data["running"] is True
    assert data["pid"] == pid
    assert data["address"] == url
    assert data["usage"]["today"]["requests"] == 1
    assert data["providers"][0]["credentials"] == "client"

    # An Anthropic provider: Claude Code's MCP tool search stays on behind the sidecar.
    assert sh.out == f"export ANTHROPIC_BASE_URL={url}\nexport ENABLE_TOOL_SEARCH=true\n"
    assert fish.out == f"set -gx ANTHROPIC_BASE_URL '{url}';\nset -gx ENABLE_TOOL_SEARCH 'true';\n"
    assert pwsh.out == f"$env:ANTHROPIC_BASE_URL = '{url}'\n$env:ENABLE_TOOL_SEARCH = 'true'\n"
    evaluated = await asyncio.create_subprocess_exec(
        "sh", "-c", 'eval "$1"; printf %s "$ANTHROPIC_BASE_URL"', "sh", sh.out, stdout=asyncio.subprocess.PIPE
    )
    assert (await evaluated.communicate())[0].decode() == url

    assert run.rc == 0, run.err
    assert run.out == url + "\n"
    assert "started" not in run.err  # it was running already
    assert missing.rc == 1
    assert missing.err == "error: command not found: no-such-command-for-the-sidecar\n"

    stopped = await cli("stop")

    assert stopped.rc == 0, stopped.err
    assert stopped.out == f"stopped (pid {pid})\n"
    assert not pid_alive(pid)
    assert not home.state_file.exists()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(url + "/healthz"):
            pass
    second, after = await asyncio.gather(cli("stop"), cli("status"))
    assert (second.rc, second.out) == (0, "claude-sidecar is not running\n")
    assert after.rc == 1


async def test_stop_and_status_with_a_stale_state_file(home: Paths) -> None:
    """After a crash (kill -9) the state file names a dead process: not running."""
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "")
    await dead.wait()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    home.state_dir.mkdir(parents=True)
    home.state_file.write_text(json.dumps({"pid": dead.pid, "url": f"http://127.0.0.1:{closed_port}"}))


    stop, status, as_json, env = await asyncio.gather(
        cli("stop"), cli("status"), cli("status", "--json"), cli("env")
    )

    assert (stop.rc, stop.out) == (0, "claude-sidecar is not running\n")
    assert status.rc == 1
    assert status.out == "claude-sidecar is not running (start it with: claude-sidecar start)\n"
    assert as_json.rc == 1
    assert json.loads(as_json.out) == {"running": False}
    assert env.rc == 1
    assert env.err == "error: claude-sidecar is not running; start it with: claude-sidecar start\n"


async def test_run_starts_the_sidecar_when_needed(home: Paths, fake: FakeAnthropic) -> None:
    write_config(home, "[server]\nport = 0\n\n" + anthropic_config(fake.url))

    run = await cli("run", "--", sys.executable, "-c", PRINT_URL)

    assert run.rc == 0, run.err
    state = read_state(home)
    assert state is not None and pid_alive(state["pid"])
    assert run.out == state["url"] + "\n"
    assert run.err == f"claude-sidecar started at {state['url']}\n"


# ------------------------------------------------------------------ injected keys


async def test_injected_key_needs_the_local_token(
    home: Paths, fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    write_config(home, anthropic_config(fake.url))
    stored = CliRunner().invoke(cli_group, ["keys", "set", "anthropic", "--stdin"], input=SECRET + "\n")
    assert stored.exit_code == 0, stored.output

    started = await cli("start", "--port", "0")

    assert started.rc == 0, started.err
    url = read_state(home)["url"]  # type: ignore[index]
    token = home.token_file.read_text().strip()
    env, status = await asyncio.gather(cli("env"), cli("status", "--json"))
    # The token travels in a header of its own; Claude Code gets a placeholder login, since
    # every provider holds its own key.
    assert env.out == (
        f"export ANTHROPIC_BASE_URL={url}\nexport ENABLE_TOOL_SEARCH=true\n"
        f"export ANTHROPIC_CUSTOM_HEADERS='x-sidecar-token: {token}'\nexport ANTHROPIC_AUTH_TOKEN=claude-sidecar\n"
    )
    assert json.loads(status.out)["providers"][0]["credentials"] == "keyring:anthropic"
    for output in (started, env, status):
        assert SECRET not in output.out + output.err
    assert SECRET not in home.log_file.read_text()

    refused, body = await post(client, url, {"x-api-key": CLIENT_KEY})
    assert refused == 401
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert "claude-sidecar" in body["error"]["message"]
    assert fake.requests == []

    # What Claude Code sends with that environment (plus a stray key of its own).
    ok, body = await post(client, url, {"x-sidecar-token": token, "Authorization": "Bearer claude-sidecar", "x-api-key": CLIENT_KEY})
    assert ok == 200, body
    assert body["type"] == "message"
    [upstream] = fake.requests
    assert upstream.header("x-api-key") == SECRET
    assert upstream.header("authorization") is None
    sent = " ".join(v for _, v in upstream.headers)
    assert CLIENT_KEY not in sent
    assert token not in sent


# ------------------------------------------------------------------ listeners


async def test_port_fallback_and_unix_socket(home: Paths, fake: FakeAnthropic, client: aiohttp.ClientSession) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write_config(home, f"[server]\nport = {port}\nunix_socket = true\n\n" + anthropic_config(fake.url))

        started = await cli("start")

        assert started.rc == 0, started.err
    state = read_state(home)
    assert state is not None
    assert port < state["port"] < port + 20
    assert state["url"] == f"http://127.0.0.1:{state['port']}"
    assert f"at {state['url']}" in started.out
    async with client.get(state["url"] + "/healthz") as resp:
        assert resp.status == 200

    sock = home.socket_file
    assert state["unix_socket"] == str(sock)
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert mode(sock) == 0o600
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as over_unix:
        async with over_unix.post("http://localhost/v1/messages", json=BODY) as resp:
            assert resp.status == 200
            assert (await resp.json())["type"] == "message"
    assert len(fake.requests) == 1

    os.kill(state["pid"], signal.SIGTERM)
    assert wait_gone(state["pid"])
    assert not sock.exists()
    assert not home.state_file.exists()


# ------------------------------------------------------------------ graceful shutdown


async def test_sigterm_lets_an_in_flight_stream_finish(
    home: Paths, hermetic_env: Path, fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    grace = 6.0
    fake.script(StallMidStream(after_events=3, seconds=1.5))
    child = await asyncio.to_thread(
        start_child, hermetic_env, anthropic_config(fake.url, f"\n[server]\nshutdown_grace_seconds = {grace}\n")
    )
    try:
        port = int(child.url.rsplit(":", 1)[1])
        async with client.post(child.url + "/v1/messages", json={**BODY, "stream": True}) as resp:
            assert resp.status == 200
            received = await resp.content.readany()
            assert b"event: message_start" in received

            child.proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            refused = False
            while not refused and time.monotonic() - t0 < 1.0:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except ConnectionRefusedError:
                    refused = True
                except ConnectionResetError:
                    pass  # caught in the backlog as the listener closed: retry
                else:
                    writer.close()
                    with contextlib.suppress(ConnectionError):
                        await writer.wait_closed()
                    await asyncio.sleep(0.02)
            assert refused, "new connections were still accepted after SIGTERM"
            assert b"message_stop" not in received  # the stream is still in flight

            received += await resp.content.read()

        assert received.rstrip().endswith(b'data: {"type":"message_stop"}')
        rc = await asyncio.to_thread(child.proc.wait, grace + 5)
        elapsed = time.monotonic() - t0
        assert rc == 0, (hermetic_env / "child.log").read_text()
        assert 1.0 < elapsed < grace
        assert not home.state_file.exists()
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()


# ------------------------------------------------------------------ bad config


async def test_a_bad_config_makes_start_exit_1_with_one_line(home: Paths, tmp_path: Path) -> None:
    write_config(home, "[server]\nport = true\n")
    other = tmp_path / "other.toml"
    other.write_text('[[providers]]\nname = "anthropic"\ntype = "anthropic"\nkeys = ["sk-oops"]\n')
    missing_key = tmp_path / "missing-key.toml"
    missing_key.write_text('[[providers]]\nname = "anthropic"\ntype = "anthropic"\nkeys = ["keyring:work"]\n')

    background, foreground, with_config, with_missing_key = await asyncio.gather(
        cli("start"),
        cli("start", "--foreground"),
        cli("start", "--config", str(other)),
        cli("start", env={"CLAUDE_SIDECAR_CONFIG": str(missing_key)}),
    )

    want = f"error: {home.config_file}:2: server.port: must be an integer, not a boolean\n"
    assert (background.rc, background.out, background.err) == (1, "", want)
    assert (foreground.rc, foreground.out, foreground.err) == (1, "", want)
    assert with_config.rc == 1
    assert with_config.err.startswith(f"error: {other}:4: providers[0].keys: entry 0 ('sk-oops') must be")
    assert with_config.err.count("\n") == 1
    assert with_missing_key.rc == 1
    assert with_missing_key.err == (
        "error: provider 'anthropic': key 'keyring:work' is not set (run: claude-sidecar keys set work)\n"
    )
    assert not home.state_file.exists()
    assert not home.log_file.exists()  # no daemon was even spawned
