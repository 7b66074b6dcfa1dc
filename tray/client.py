"""A small synchronous client for the local control API, for the tray's worker threads.

It finds the sidecar and calls it through the one locator and call the CLI uses
(sidecar.cli.control) on every call, so a sidecar that restarts on another port is found
again without restarting the tray; the failures are worded in a few words for the tooltip.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
from collections.abc import Iterator
from typing import Any

from sidecar.cli import control
from sidecar.paths import Paths
from tray.state import BadAnswer, TrayState, state_from_api


class Unreachable(Exception):
    """No sidecar answered; the message says why in a few words ("not running", ...)."""


class ControlClient:
    """Calls `/sidecar/v1/...` on the sidecar that the state directory names."""

    def __init__(self, paths: Paths, timeout: float = 5.0) -> None:
        self.paths = paths
        self.timeout = timeout

    def locate(self) -> tuple[str, str]:
        """The running sidecar's base URL and the local token."""
        target = self._target()
        return target.url, target.token

    def _target(self) -> control.Target:
        try:
            return control.locate(self.paths)
        except control.NoToken:
            raise Unreachable(f"no local token in {self.paths.token_file}") from None
        except control.NotRunning:
            raise Unreachable("not running") from None

    def call(
        self, method: str, path: str, *, optional: bool = False, timeout: float | None = None
    ) -> Any:
        """Call `API + path` and return the JSON answer; None for a 404 when `optional`."""
        target = self._target()
        try:
            return control.call(target, method, control.API + path, timeout or self.timeout)
        except urllib.error.HTTPError as e:
            if e.code == 404 and optional:
                return None
            raise Unreachable(_http_problem(e)) from None
        except (urllib.error.URLError, OSError) as e:
            raise Unreachable(f"not answering at {target.url}") from e
        except ValueError:
            raise Unreachable(f"{path}: the answer is not JSON") from None

    def fetch_state(self) -> TrayState:
        """Status, routes, policy and cache in one `TrayState` (routes etc. may be absent)."""
        status = self.call("GET", "/status")
        routes = self.call("GET", "/routes", optional=True)
        policy = self.call("GET", "/policy", optional=True)
        cache = self.call("GET", "/cache", optional=True)
        try:
            return state_from_api(status, routes, policy, cache)
        except BadAnswer as e:
            raise Unreachable(f"unexpected answer: {e}") from None

    def set_route(self, name: str, enabled: bool) -> Any:
        """Enable or disable the route `name`; returns the changed route."""
        verb = "enable" if enabled else "disable"
        return self.call("POST", f"/routes/{urllib.parse.quote(name, safe='')}/{verb}")

    def shutdown(self) -> None:
        """Ask the sidecar to stop."""
        self.call("POST", "/shutdown")

    def events(self, stop: threading.Event) -> Iterator[str]:
        """The type of every event on `/sidecar/v1/events` until the stream ends or `stop` is set."""
        target = self._target()
        try:
            resp = control.open_events(target)
        except urllib.error.HTTPError as e:
            raise Unreachable(_http_problem(e)) from None
        except (urllib.error.URLError, OSError) as e:
            raise Unreachable(f"not answering at {target.url}") from e
        with resp:
            for event in control.read_events(resp, stop):
                yield event.event


def _http_problem(e: urllib.error.HTTPError) -> str:
    if e.code in (401, 403):
        return "the local token was refused (is this the right CLAUDE_SIDECAR_HOME?)"
    try:
        message = json.loads(e.read())["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError):
        message = e.reason
    return f"HTTP {e.code}: {message}"
