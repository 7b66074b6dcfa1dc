"""Menu items built for pystray run the tray's actions: start and stop a real daemon."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from sidecar import paths
from sidecar.cli.common import pid_alive
from sidecar.daemon_state import read_state
from sidecar.paths import Paths
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config
from tests.tray.conftest import choose, eventually
from tray.app import TrayApp
from tray.state import TrayState


@pytest.fixture
def home(hermetic_env: Path) -> Iterator[Paths]:
    """This test's paths; a daemon still running at the end is killed."""
    p = paths.resolve()
    yield p
    state = read_state(p)
    if state:
        try:
            os.kill(int(state["pid"]), signal.SIGKILL)
        except ProcessLookupError:
            pass


async def test_start_and_stop_from_the_menu(
    pystray: ModuleType, home: Paths, fake: FakeAnthropic
) -> None:
    home.config_dir.mkdir(parents=True)
    home.config_file.write_text("[server]\nport = 0\n\n" + anthropic_config(fake.url))
    app = TrayApp(home, interval=0.5)
    down = await asyncio.to_thread(app.poller.fetch)
    assert down.problem == "not running"
    app.poller.start(down)
    try:
        choose(pystray, app, down, "Start sidecar")
        up = await eventually(
            lambda: asyncio.to_thread(lambda: (s := app.poller.fetch()).running and s), "the daemon"
        )
        pid = read_state(home)["pid"]  # type: ignore[index]

        choose(pystray, app, up, "Stop sidecar")
        await eventually(
            lambda: read_state(home) is None, "the daemon to stop and remove its state file"
        )
        await eventually(lambda: not pid_alive(pid), "the daemon's process to end")
    finally:
        app.poller.stop()


async def test_a_failed_start_is_reported(
    pystray: ModuleType, home: Paths, caplog: pytest.LogCaptureFixture
) -> None:
    home.config_dir.mkdir(parents=True)
    home.config_file.write_text("[server]\nport = true\n")
    app = TrayApp(home, interval=0.5)
    app.poller.start(TrayState(running=False, problem="not running"))
    try:
        choose(pystray, app, TrayState(running=False), "Start sidecar")
        await eventually(
            lambda: [r for r in caplog.records if r.name == "tray.worker"], "the failure"
        )
    finally:
        app.poller.stop()
    [record] = [r for r in caplog.records if r.name == "tray.worker"]
    assert record.getMessage() == (
        f"tray action failed: claude-sidecar start failed: {home.config_file}:2: server.port: must be an integer, not a boolean"
    )
    assert read_state(home) is None
