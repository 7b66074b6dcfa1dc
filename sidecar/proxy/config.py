"""The `[server]` config section: where and how the daemon listens, and the listener's limits.

```toml
[server]
host = "127.0.0.1"          # loopback only unless you mean it (sidecar.config.warnings says so)
port = 8787                 # CLAUDE_SIDECAR_PORT overrides
unix_socket = false         # true: <state dir>/sidecar.sock, or a path
max_body_mb = 64            # and the other limits of ServerConfig
```
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sidecar.configread import Reader
from sidecar.net import host_is_loopback

DEFAULT_PORT = 8787


@dataclass(frozen=True)
class ServerConfig:
    """Where and how the daemon listens."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    unix_socket: str | None = None
    require_token: bool = False
    shutdown_grace_seconds: float = 30.0
    # Limits on what a client may hold (see docs/configuration.md, "Listener limits").
    header_timeout_seconds: float = 30.0  # a request head must arrive within this of its first byte
    body_timeout_seconds: float = 30.0  # the longest pause inside a request body
    request_timeout_seconds: float = 300.0  # a whole request body must arrive within this
    idle_timeout_seconds: float = 60.0  # an idle keep-alive connection is closed after this
    max_connections: int = 512  # more are refused (503), after the idlest ones were closed
    max_body_mb: float = 64.0  # a larger body is refused with 413 (up front from Content-Length)
    fast_path: bool = True  # plain POST /v1/messages requests skip aiohttp's request machinery (sidecar.proxy.lane)

    @property
    def max_body_bytes(self) -> int:
        """`max_body_mb` in bytes."""
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def loopback(self) -> bool:
        """Whether the listener is bound to a loopback address (the safe default)."""
        return host_is_loopback(self.host)


_LIMITS: dict[str, float | int] = {
    f.name: getattr(ServerConfig(), f.name)
    for f in fields(ServerConfig)
    if f.name.endswith(("_timeout_seconds", "max_connections", "max_body_mb"))
}


def read_server(r: Reader, data: Any) -> ServerConfig:
    """Validate the `[server]` table."""
    d = r.table(data, "server", {"host", "port", "unix_socket", "require_token", "shutdown_grace_seconds", "fast_path", *_LIMITS})
    host = r.get(d, "server", "host", str, "127.0.0.1")
    port = r.get(d, "server", "port", int, DEFAULT_PORT)
    if not 0 <= port <= 65535:
        raise r.fail("server.port", f"{port} is not a port (0-65535)")
    sock = r.get(d, "server", "unix_socket", (str, bool), None)
    if sock is False:
        sock = None
    elif sock is True:
        sock = ""  # the default path in the state dir
    grace = float(r.get(d, "server", "shutdown_grace_seconds", (int, float), 30.0))
    if grace < 0:
        raise r.fail("server.shutdown_grace_seconds", "must not be negative")
    limits: dict[str, Any] = {}
    for key, default in _LIMITS.items():
        value = r.get(d, "server", key, (int, float), default)
        if isinstance(value, bool) or value <= 0:
            raise r.fail(f"server.{key}", "must be a positive number")
        limits[key] = int(value) if isinstance(default, int) else float(value)
    return ServerConfig(
        host=host,
        port=port,
        unix_socket=sock,
        require_token=r.get(d, "server", "require_token", bool, False),
        shutdown_grace_seconds=grace,
        fast_path=r.get(d, "server", "fast_path", bool, True),
        **limits,
    )
