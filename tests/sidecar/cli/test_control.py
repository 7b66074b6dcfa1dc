"""The one locator, control-API call and event reader that the CLI, the dashboard and the tray share."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import threading
from pathlib import Path

import pytest

from sidecar import paths
from sidecar.cli import control
from sidecar.cli.common import find_daemon
from sidecar.daemon_state import write_state
from sidecar.protocol.sse import Event
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config, sidecar_in_process
from tray.client import ControlClient as TrayClient
from tui import locate as tui_locate

STREAM = (
    b"event: hello\ndata: {\"pid\": 1}\n\n"
    b": keepalive\n\n"
    b"id: 7\r\nevent: request\r\ndata: {\"id\": \"a\",\r\ndata:  \"cost_usd\": 0.5}\r\n\r\n"
    b"data: unnamed\rdata: second line\r\r"
    b"event: no-data\n\n"
    b"event: request_started\ndata: {\"id\": \"\xc3\xa9\"}\n\n"
)
EXPECTED = [
    Event("hello", '{"pid": 1}', None),
    Event("request", '{"id": "a",\n "cost_usd": 0.5}', "7"),
    Event("message", "unnamed\nsecond line", "7"),
    Event("request_started", '{"id": "é"}', "7"),
]


def test_the_stream_reads_as_the_spec_says_an_event_without_data_is_dropped() -> None:
    assert control.read_events(io.BytesIO(STREAM), threading.Event()).__next__() == EXPECTED[0]
    assert list(control.read_events(io.BytesIO(STREAM), threading.Event())) == EXPECTED


def test_every_program_locates_the_sidecar_the_same_way(hermetic_env: Path) -> None:
    p = paths.resolve()
    p.ensure()
    with pytest.raises(control.NotRunning, match=r"no sidecar is running .*start it with `claude-sidecar start`"):
        control.locate(p)
    write_state(p, {"pid": 1, "url": "http://127.0.0.1:9/"})
    with pytest.raises(control.NoToken, match="cannot read the local token"):
        control.locate(p)
    p.token_file.write_text("tok\n")
    target = control.locate(p)
    assert target == control.Target("http://127.0.0.1:9", "tok")
    assert tui_locate.from_state(p)() == target
    assert TrayClient(p).locate() == (target.url, target.token)


async def test_a_proxy_in_the_environment_never_stands_between_the_cli_and_its_sidecar(
    fake: FakeAnthropic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    async with sidecar_in_process(anthropic_config(fake.url), tmp_path / "home") as sc:
        write_state(sc.paths, {"pid": os.getpid(), "url": sc.url})
        monkeypatch.setenv("HTTP_PROXY", dead)
        monkeypatch.setenv("http_proxy", dead)
        d = await asyncio.to_thread(find_daemon, sc.paths)
        assert d is not None
        status = await asyncio.to_thread(d.call, "GET", "/sidecar/v1/status")
        assert d.url == sc.url and isinstance(status, dict)
