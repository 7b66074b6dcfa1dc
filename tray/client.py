"""A small synchronous client for the local control API, for the tray's worker threads.

It finds the sidecar the way the CLI does (the state file names its address, the token
file holds the local token) on every call, so a sidecar that restarts on another port is
found again without restarting the tray.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from sidecar.paths import Paths
from sidecar.state import read_state
from tray.state import BadAnswer, TrayState, state_from_api

API = "/sidecar/v1"
# The event stream sends a keepalive comment every 15 s; a read that waits longer than
# this means the connection is dead.
EVENTS_READ_TIMEOUT = 40.0


class Unreachable(Exception):
    """No sidecar answered; the message says why in a few words ("not running", ...)."""


class ControlClient:
    """Calls `/sidecar/v1/...` on the sidecar that the state directory names."""

    def __init__(self, paths: Paths, timeout: float = 5.0) -> None:
        self.paths = paths
        self.timeout = timeout
        # Loopback traffic never goes through HTTP(S)_PROXY.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def locate(self) -> tuple[str, str]:
        """The running sidecar's base URL and the local token."""
        state = read_state(self.paths)
        if not state or not isinstance(state.get("url"), str):
            raise Unreachable("not running")
        try:
            token = self.paths.token_file.read_text().strip()
        except OSError:
            raise Unreachable(f"no local token in {self.paths.token_file}") from None
        return state["url"], token

    def call(
        self, method: str, path: str, *, optional: bool = False, timeout: float | None = None
    ) -> Any:
        """Call `API + path` and return the JSON answer; None for a 404 when `optional`."""
        url, token = self.locate()
        req = urllib.request.Request(
            url + API + path,
            method=method,
            headers={"Authorization": f"Bearer {token}"},
            data=b"" if method == "POST" else None,
        )
        try:
            with self._opener.open(req, timeout=timeout or self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            if e.code == 404 and optional:
                return None
            raise Unreachable(_http_problem(e)) from None
        except (urllib.error.URLError, OSError) as e:
            raise Unreachable(f"not answering at {url}") from e
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
        url, token = self.locate()
        req = urllib.request.Request(
            url + API + "/events",
            headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
        )
        try:
            resp = self._opener.open(req, timeout=EVENTS_READ_TIMEOUT)
        except urllib.error.HTTPError as e:
            raise Unreachable(_http_problem(e)) from None
        except (urllib.error.URLError, OSError) as e:
            raise Unreachable(f"not answering at {url}") from e
        with resp:
            kind = ""
            while not stop.is_set():
                try:
                    line = resp.readline()
                except OSError:
                    return
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if text.startswith("event:"):
                    kind = text[6:].strip()
                elif not text and kind:
                    yield kind
                    kind = ""


def _http_problem(e: urllib.error.HTTPError) -> str:
    if e.code in (401, 403):
        return "the local token was refused (is this the right CLAUDE_SIDECAR_HOME?)"
    try:
        message = json.loads(e.read())["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError):
        message = e.reason
    return f"HTTP {e.code}: {message}"
