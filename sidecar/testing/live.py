"""A sidecar served in the test's loop that watches its config file and applies edits live,
for tests of reloading (routing sections, the org's policy overlay)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from sidecar import config as config_mod
from sidecar import paths as paths_mod
from sidecar.appkeys import BUS, RUNTIME
from sidecar.daemon_state import load_or_create_token
from sidecar.policy.control import POLICY
from sidecar.proxy.app import RELOADER, create_app
from sidecar.proxy.reload import Reloader
from sidecar.proxy.server import bind

# The price of the model BODY names, for a config that has budgets.
PRICES = '[pricing."claude-opus-4-8"]\ninput = 5.0\noutput = 25.0\n'
BODY = {"model": "claude-opus-4-8", "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Live:
    """A served sidecar that watches its config file, and what a test needs of it."""

    url: str
    token: str
    file: Path
    reloader: Reloader
    events: asyncio.Queue[dict[str, Any]]
    app: web.Application


@asynccontextmanager
async def live_sidecar(home: Path, text: str) -> AsyncIterator[Live]:
    """A sidecar app that watches its config file, served on loopback in this loop."""
    p = paths_mod.resolve({"CLAUDE_SIDECAR_HOME": str(home)})
    p.ensure()
    file = home / "config.toml"
    file.write_text(text)
    app = create_app(config_mod.load(file, {}), p, load_or_create_token(p), {}, config_path=file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = bind("127.0.0.1", 0)
    await web.SockSite(runner, sock).start()
    reloader = app[RELOADER]
    assert app[RUNTIME].reloader is reloader  # it watches the file
    if reloader.apply_policy is None:  # until the app wires it itself
        reloader.apply_policy = app[POLICY].apply_policy
    events = app[BUS].subscribe()
    try:
        yield Live(f"http://127.0.0.1:{sock.getsockname()[1]}", app[RUNTIME].token, file, reloader, events, app)
    finally:
        await runner.cleanup()
