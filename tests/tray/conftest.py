"""Fixtures for the tray: a real sidecar the tray can find, and an X display with a tray."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from PIL import Image

from sidecar.daemon_state import write_state
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import InProcessSidecar, anthropic_config, sidecar_in_process
from tests.tray.x11 import ROOT, SystemTray, Xvfb
from tray.app import TrayApp
from tray.backend import backend_name, build_menu, load_pystray
from tray.menu import menu_model
from tray.render import render_icon
from tray.state import TrayState

BODY = {
    "model": "claude-opus-4-8",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture
async def sidecar(fake: FakeAnthropic, hermetic_env: Path) -> AsyncIterator[InProcessSidecar]:
    """A sidecar served from the test's loop, with the state file a daemon writes."""
    async with sidecar_in_process(anthropic_config(fake.url), hermetic_env) as sc:
        write_state(sc.paths, {"pid": os.getpid(), "url": sc.url})
        yield sc


@pytest.fixture
def xvfb() -> Iterator[Xvfb]:
    """A private X server on a display number it picked itself."""
    with Xvfb() as x:
        yield x


@pytest.fixture
def systray(xvfb: Xvfb) -> Iterator[SystemTray]:
    """A system tray on that display that docks icons, as a desktop panel does."""
    with SystemTray(xvfb.display) as tray:
        yield tray


async def post_message(
    client: aiohttp.ClientSession, url: str, *, stream: bool = False, **extra: Any
) -> None:
    """One request through the sidecar (with a client key: forwarding mode), read to the end.

    The sidecar's cache is bypassed: every request here must reach the upstream and cost.
    """
    body = {**BODY, "stream": stream, **extra}
    headers = {"x-api-key": "k", "x-sidecar-cache": "off"}
    async with client.post(url + "/v1/messages", json=body, headers=headers) as resp:
        answer = await resp.read()
        assert resp.status == 200, answer


async def control(
    client: aiohttp.ClientSession, url: str, token: str, method: str, path: str
) -> Any:
    """Call the control API and return its JSON."""
    async with client.request(
        method, url + "/sidecar/v1" + path, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def eventually(check: Any, what: str, within: float = 20.0) -> Any:
    """Poll the (sync or async) `check` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while loop.time() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what} (last: {last!r})")


def tray_env(display: str | None) -> dict[str, str]:
    """This environment with the display set (or none) and pystray's xorg backend."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYSTRAY_BACKEND"] = "xorg"
    if display is not None:
        env["DISPLAY"] = display
    return env


@pytest.fixture
def tray_process(systray: SystemTray, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`claude-sidecar tray --interval 1` on the test display; its output goes to tray.log.

    Its terminal emulator ($TERMINAL) is a script that writes its arguments to terminal.args.
    """
    terminal = tmp_path / "terminal"
    terminal.write_text('#!/bin/sh\nprintf \'%s\\n\' "$@" > "$(dirname "$0")/terminal.args"\n')
    terminal.chmod(0o755)
    log = open(tmp_path / "tray.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "tray", "--interval", "1"],
        cwd=ROOT, env={**tray_env(systray.display_name), "TERMINAL": str(terminal)},
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    log.close()
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def as_docked(state: TrayState, size: int) -> Image.Image:
    """What pystray's xorg backend puts in a size x size window for `state`."""
    picture = Image.new("RGB", (size, size))
    picture.paste(render_icon(state).resize((size, size), Image.Resampling.LANCZOS))
    return picture


async def shows(systray: SystemTray, icon: int, title: str, state: TrayState) -> None:
    """Wait until the docked icon has `title` and the picture rendered for `state`."""

    seen: list[str | None] = []

    def matches() -> bool:
        picture = systray.picture(icon)
        seen[:] = [systray.title(icon)]
        return seen[0] == title and picture.tobytes() == as_docked(state, picture.width).tobytes()

    try:
        await eventually(matches, f"the title {title!r} and the picture of {state}")
    except AssertionError as e:
        raise AssertionError(f"{e}; the title was {seen[0]!r}") from None


@pytest.fixture
def pystray(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """pystray with its dummy backend: real Menu and MenuItem objects, no display needed."""
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")
    module = load_pystray()
    assert backend_name(module) == "dummy", "pystray was imported earlier with another backend"
    return module


def choose(pystray: ModuleType, app: TrayApp, state: TrayState, text: str) -> None:
    """Click the menu item called `text` in the pystray menu the tray builds for `state`."""
    menu = build_menu(pystray, menu_model(state), app.act)
    items: list[Any] = [i for i in menu.items if i is not pystray.Menu.SEPARATOR]
    [item] = [i for i in items if i.text == text]
    assert item.enabled
    item(None)
