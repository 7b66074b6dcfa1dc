"""What every command needs: paths, config, and a small client for the control API."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar import paths as paths_mod
from sidecar.cli import control
from sidecar.config import Config, load
from sidecar.daemon_state import read_state
from sidecar.paths import Paths


def context(config: str | None = None) -> tuple[Config, Paths]:
    """The paths (honouring --config) and the validated config."""
    env = dict(os.environ)
    if config:
        env["CLAUDE_SIDECAR_CONFIG"] = str(Path(config).expanduser().resolve())
    p = paths_mod.resolve(env)
    return load(p.config_file, env), p


@dataclass
class Daemon:
    """A running sidecar found through its state file."""

    state: dict[str, Any]
    token: str

    @property
    def url(self) -> str:
        """The TCP address clients use."""
        return str(self.state["url"])

    def call(self, method: str, path: str, timeout: float = 5.0) -> Any:
        """Call the control API and return its JSON answer (errors as `control.call` raises them)."""
        return control.call(control.Target(self.url, self.token), method, path, timeout)


def find_daemon(p: Paths) -> Daemon | None:
    """The running daemon, if its state file names a live process that answers /healthz."""
    state = read_state(p)
    if not state or not pid_alive(int(state.get("pid", 0))):
        return None
    try:
        target = control.locate(p)
    except control.NotRunning:
        return None
    if not control.healthy(target.url):
        return None
    return Daemon(state, target.token)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists and has not exited."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    # A daemon that exited stays a zombie until init reaps it, which some container inits
    # do only every few seconds; it is gone for us. Linux only (elsewhere: not a zombie).
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    end = stat.rfind(b")")  # the state follows the command name, which may contain ')'
    return stat[end + 2 : end + 3] == b"Z"
