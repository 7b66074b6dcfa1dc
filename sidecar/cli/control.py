"""The one way the CLI, the dashboard (tui/) and the tray find the running sidecar and talk
to its control API: the locator (the state file names the address, the token file holds
the local token), a synchronous call, and the event stream read with the daemon's own SSE
reader. Each program words the failures for its own screen.

Loopback traffic never goes through HTTP(S)_PROXY: a proxy set for the user's other traffic
must not stand between a program and its own sidecar.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from sidecar.daemon_state import read_state
from sidecar.paths import Paths
from sidecar.protocol.sse import Event, SSEReader

API = "/sidecar/v1"
# The sidecar sends a keepalive comment every 15 s: three missed ones mean the stream is dead.
EVENTS_READ_TIMEOUT = 45.0

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Target:
    """A control API to talk to: its base URL and the local token."""

    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header of every call."""
        return {"Authorization": f"Bearer {self.token}"}


class NotRunning(Exception):
    """No sidecar to connect to; the message says why and what to do."""


class NoToken(NotRunning):
    """A sidecar's state file is there but the local token cannot be read."""


def locate(paths: Paths) -> Target:
    """The running sidecar's address and token, read again on every call (a restarted
    daemon may listen on another port)."""
    state = read_state(paths)
    if not state or not isinstance(state.get("url"), str) or not state["url"]:
        raise NotRunning(f"no sidecar is running (no state in {paths.state_file}); start it with `claude-sidecar start`")
    try:
        token = paths.token_file.read_text().strip()
    except OSError as e:
        raise NoToken(f"cannot read the local token {paths.token_file}: {e.strerror or e}") from None
    return Target(str(state["url"]).rstrip("/"), token)


def call(target: Target, method: str, path: str, timeout: float = 5.0) -> Any:
    """`method path` on the sidecar and its JSON answer. Raises urllib's HTTPError for a
    non-2xx answer, URLError or OSError when nothing answers, ValueError for a non-JSON one."""
    req = urllib.request.Request(target.url + path, method=method, headers=target.headers, data=b"" if method == "POST" else None)
    with _opener.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when `url` answers `/healthz` with 200."""
    try:
        with _opener.open(url + "/healthz", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:  # URLError and HTTPError are OSErrors
        return False


def open_events(target: Target) -> IO[bytes]:
    """The open `/sidecar/v1/events` response (errors as `call` raises them)."""
    req = urllib.request.Request(target.url + API + "/events", headers={**target.headers, "Accept": "text/event-stream"})
    resp: IO[bytes] = _opener.open(req, timeout=EVENTS_READ_TIMEOUT)
    return resp


def read_events(resp: IO[bytes], stop: threading.Event) -> Iterator[Event]:
    """The events of an open stream, line by line, until it ends, a read fails or `stop` is set."""
    reader = SSEReader()
    while not stop.is_set():
        try:
            line = resp.readline()
        except OSError:
            return
        if not line:
            return
        yield from live(reader.feed(line))


def live(events: list[Event]) -> list[Event]:
    """The events a program acts on: those with data. The spec drops an event without data
    lines; the daemon's reader keeps a named one, for upstreams that send such."""
    return [e for e in events if e.data]
