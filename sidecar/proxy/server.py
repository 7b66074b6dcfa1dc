"""Running the daemon in the foreground: bind, record state, serve, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from sidecar import __version__
from sidecar.appkeys import RUNTIME
from sidecar.config import Config
from sidecar.config import warnings as config_warnings
from sidecar.daemon_state import hold_data_dir, load_or_create_token, read_state, write_state
from sidecar.errors import ConfigError
from sidecar.lifecycle import stop_on_signals
from sidecar.paths import Paths
from sidecar.proxy.app import create_app
from sidecar.proxy.listener import SidecarRunner, drain
from sidecar.secrets import SecretStore, resolve_keys
from sidecar.tasks import TaskSet

log = logging.getLogger(__name__)
PORT_TRIES = 20
UNIX_PATH_MAX = 103  # sun_path is 104 bytes on macOS, 108 on Linux, NUL included




def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `port`, or on the next free port above it when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last: OSError | None = None
    for candidate in [port] if port == 0 else range(port, min(port + PORT_TRIES, 65536)):
        sock = socket.socket(family, socket.SOCK_STREAM)
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as e:
            sock.close()
            last = e
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise ConfigError(f"cannot listen on {host}:{candidate}: {e.strerror}") from None
        sock.listen(1024)
        sock.setblocking(False)
        return sock
    raise ConfigError(f"ports {port}-{port + PORT_TRIES - 1} on {host} are all taken ({last}); set [server] port")






async def serve(cfg: Config, paths: Paths, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT or a control-API shutdown, then stop gracefully; one
    daemon per data dir (a second one is refused before it opens anything)."""
    paths.ensure()
    with hold_data_dir(paths):
        await _serve(cfg, paths, ready)


async def _serve(cfg: Config, paths: Paths, ready: asyncio.Event | None) -> None:
    token = load_or_create_token(paths)
    store = SecretStore(paths.config_dir / "credentials.json")
    keys = {p.name: resolve_keys(p, store) for p in cfg.providers}
    app = create_app(cfg, paths, token, keys, config_path=cfg.source or paths.config_file)
    rt = app[RUNTIME]
    # drain() below spends the shutdown grace; aiohttp's own wait is then only for handlers
    # of connections already reset.
    runner = SidecarRunner(app, cfg.server, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    for warning in config_warnings(cfg):
        log.warning("%s", warning)
    try:
        await runner.setup()
    except BaseException:
        await runner.cleanup()  # close what the contexts that did start had opened
        raise
    sock = bind(cfg.server.host, cfg.server.port)
    host, port = sock.getsockname()[:2]
    await web.SockSite(runner, sock).start()
    url_host = f"[{host}]" if ":" in host else host
    rt.address = f"http://{url_host}:{port}"
    sock_path: Path | None = None
    if cfg.server.unix_socket is not None and hasattr(socket, "AF_UNIX"):
        sock_path = Path(cfg.server.unix_socket) if cfg.server.unix_socket else paths.socket_file
        if len(os.fsencode(sock_path)) > UNIX_PATH_MAX:
            raise ConfigError(
                f"server.unix_socket: {sock_path} is longer than the {UNIX_PATH_MAX} bytes a Unix socket path may have; "
                "set [server] unix_socket to a shorter path"
            )
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        old = os.umask(0o177)
        try:
            await web.UnixSite(runner, str(sock_path)).start()
        finally:
            os.umask(old)
        os.chmod(sock_path, 0o600)
        rt.unix_socket = str(sock_path)
    state = {
        "pid": os.getpid(),
        "host": host,
        "port": port,
        "url": rt.address,
        "unix_socket": rt.unix_socket,
        "started_at": rt.started_at,
        "version": __version__,
        "config_file": str(paths.config_file),
    }
    write_state(paths, state)
    stop_on_signals(rt.stop)
    reload_tasks = TaskSet()
    if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread() and rt.reloader is not None:
        reloader = rt.reloader
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGHUP, lambda: reload_tasks.spawn(reloader.reload("SIGHUP"), name="config-reload")
        )
    # Everything loaded so far (price tables, modules) lives as long as the process: keep it
    # out of the collector's generations so a full collection never walks it mid-request.
    gc.collect()
    gc.freeze()
    log.info("claude-sidecar %s listening on %s", __version__, rt.address)
    if ready is not None:
        ready.set()
    try:
        await rt.stop.wait()
    finally:
        t0 = time.monotonic()
        # Stop accepting, let in-flight requests finish within the grace period, close resources.
        await reload_tasks.close()
        await drain(runner, cfg.server.shutdown_grace_seconds)
        await runner.cleanup()
        current = read_state(paths)
        if current and current.get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                paths.state_file.unlink()
        if sock_path is not None:
            with contextlib.suppress(FileNotFoundError):
                sock_path.unlink()
        log.info("stopped in %.1f s", time.monotonic() - t0)


def run_foreground(cfg: Config, paths: Paths) -> None:
    """Run the daemon in this process (uvloop where available)."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(serve(cfg, paths))
