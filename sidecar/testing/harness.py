"""Run a sidecar inside the current event loop (tests, benchmarks) or as a child process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from aiohttp import web

from sidecar import paths as paths_mod
from sidecar.appkeys import LEDGER, RUNTIME
from sidecar.config import Config, parse
from sidecar.daemon_state import load_or_create_token
from sidecar.paths import Paths
from sidecar.proxy.app import create_app
from sidecar.proxy.listener import SidecarRunner
from sidecar.proxy.server import bind
from sidecar.secrets import SecretStore, resolve_keys


def anthropic_config(upstream_url: str, extra: str = "") -> str:
    """Config text with one Anthropic provider pointed at `upstream_url`."""
    return f'[[providers]]\nname = "anthropic"\ntype = "anthropic"\nbase_url = "{upstream_url}"\n{extra}'


@dataclass
class InProcessSidecar:
    """A sidecar app served from the caller's loop."""

    app: web.Application
    url: str
    token: str
    paths: Paths
    runner: SidecarRunner  # runner.listener.fast_served: requests the fast path answered


@asynccontextmanager
async def sidecar_in_process(config_text: str, home: Path) -> AsyncIterator[InProcessSidecar]:
    """Serve a sidecar configured by `config_text` with CLAUDE_SIDECAR_HOME=`home`."""
    p = paths_mod.resolve({"CLAUDE_SIDECAR_HOME": str(home)})
    p.ensure()
    cfg: Config = parse(config_text, None, {})
    token = load_or_create_token(p)
    store = SecretStore(p.config_dir / "credentials.json")
    keys = {prov.name: resolve_keys(prov, store) for prov in cfg.providers}
    app = create_app(cfg, p, token, keys)
    runner = SidecarRunner(app, cfg.server, access_log=None, shutdown_timeout=cfg.server.shutdown_grace_seconds)
    await runner.setup()
    sock = bind("127.0.0.1", 0)
    await web.SockSite(runner, sock).start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app[RUNTIME].address = url
    try:
        yield InProcessSidecar(app, url, token, p, runner)
    finally:
        await runner.cleanup()


@dataclass
class ChildSidecar:
    """A `claude-sidecar start --foreground` child process."""

    proc: subprocess.Popen[bytes]
    url: str
    token: str
    home: Path

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the child and wait for it to exit."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout)


def terminate(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM a child (by its Popen), SIGKILL it after `timeout` s; close its stdout pipe."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def start_child(
    home: Path,
    config_text: str,
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
    preexec_fn: Callable[[], None] | None = None,
    cli_args: tuple[str, ...] = (),
) -> ChildSidecar:
    """Start a foreground daemon in a child process and wait until it is healthy
    (`preexec_fn` runs in the child before the daemon, e.g. to lower its fd limit;
    `cli_args` go before `start`, e.g. ("--debug",))."""
    home.mkdir(parents=True, exist_ok=True)
    cfg_file = home / "config.toml"
    cfg_file.write_text(config_text)
    child_env = {**os.environ, **(env or {}), "CLAUDE_SIDECAR_HOME": str(home), "CLAUDE_SIDECAR_CONFIG": str(cfg_file)}
    child_env.setdefault("CLAUDE_SIDECAR_PORT", "0")
    p = paths_mod.resolve(child_env)
    with contextlib.suppress(FileNotFoundError):
        p.state_file.unlink()
    log = open(home / "child.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", *cli_args, "start", "--foreground"], env=child_env, stdout=log, stderr=log, preexec_fn=preexec_fn
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sidecar exited with {proc.returncode}: {(home / 'child.log').read_text()}")
        try:
            state = json.loads(p.state_file.read_text())
            if state.get("pid") == proc.pid:
                with urllib.request.urlopen(state["url"] + "/healthz", timeout=2):
                    pass
                return ChildSidecar(proc, state["url"], p.token_file.read_text().strip(), home)
        except (FileNotFoundError, ValueError, OSError):
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"sidecar did not become healthy: {(home / 'child.log').read_text()}")


async def ledger_rows(sc: InProcessSidecar) -> list[dict[str, object]]:
    """Every usage row, oldest first, after flushing the writer."""
    await sc.app[LEDGER].flush()
    db = sqlite_utils.Database(sc.paths.db_file)
    try:
        return list(db.query("select * from usage order by ts"))
    finally:
        db.conn.close()
