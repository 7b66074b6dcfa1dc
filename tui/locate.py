"""How the dashboard finds the sidecar: an explicit address, or the running daemon's state file
(read again on every (re)connection, through the one locator the CLI and the tray use:
a restarted daemon may listen on another port, and the dashboard must follow it there).
"""

from __future__ import annotations

from collections.abc import Callable

from sidecar.cli.control import NotRunning, Target, locate
from sidecar.paths import Paths

__all__ = ["Locator", "NotRunning", "Target", "fixed", "from_state"]

Locator = Callable[[], Target]


def from_state(paths: Paths) -> Locator:
    """A locator that reads the daemon's address and token from `paths` each time."""
    return lambda: locate(paths)


def fixed(url: str, token: str) -> Locator:
    """A locator for a sidecar at a known address (a remote one, or a test's)."""
    target = Target(url.rstrip("/"), token)
    return lambda: target
