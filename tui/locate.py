"""How the dashboard finds the sidecar: an explicit address, or the running daemon's state file.

The state file is read again on every (re)connection: a restarted daemon may listen on
another port (the next free one), and the dashboard must follow it there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sidecar.paths import Paths
from sidecar.state import read_state


@dataclass(frozen=True)
class Target:
    """A control API to talk to: its base URL and the local token."""

    url: str
    token: str


class NotRunning(Exception):
    """No sidecar to connect to; the message says why and what to do."""


Locator = Callable[[], Target]


def from_state(paths: Paths) -> Locator:
    """A locator that reads the daemon's address and token from `paths` each time."""

    def locate() -> Target:
        state = read_state(paths)
        if not state or not state.get("url"):
            raise NotRunning(f"no sidecar is running (no state in {paths.state_file}); start it with `claude-sidecar start`")
        try:
            token = paths.token_file.read_text().strip()
        except OSError as e:
            raise NotRunning(f"cannot read the local token {paths.token_file}: {e.strerror or e}") from None
        return Target(str(state["url"]).rstrip("/"), token)

    return locate


def fixed(url: str, token: str) -> Locator:
    """A locator for a sidecar at a known address (a remote one, or a test's)."""
    target = Target(url.rstrip("/"), token)
    return lambda: target
