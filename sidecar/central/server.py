"""Running the central server: open the store, print the bootstrap token, serve until a signal."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import sys
from dataclasses import dataclass, field

from aiohttp import web

from sidecar.central.app import create_app
from sidecar.central.serving import Options
from sidecar.central.store import open_store
from sidecar.errors import ConfigError
from sidecar.lifecycle import stop_on_signals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """Where and how to serve."""

    db_url: str
    host: str = "127.0.0.1"
    port: int = 8790
    tls_cert: str | None = None
    tls_key: str | None = None
    org_name: str = "org"
    options: Options = field(default_factory=Options)


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server TLS context from a certificate and key file (None: plain HTTP)."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load the TLS certificate/key: {e}") from None
    return ctx


async def serve(settings: ServeSettings, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT; print the address (and a bootstrap token on first run)."""
    tls = ssl_context(settings.tls_cert, settings.tls_key)
    if tls is None and not is_loopback(settings.host):
        print(
            f"warning: serving plain HTTP on {settings.host}: tokens and policies cross the network unencrypted;"
            " pass --tls-cert/--tls-key or put a TLS proxy in front",
            file=sys.stderr, flush=True,
        )  # fmt: skip
    store = await open_store(settings.db_url, settings.org_name)
    try:
        token = await store.bootstrap_admin()
        if token:
            print(f"bootstrap admin token (shown once, keep it safe): {token}", flush=True)
        runner = web.AppRunner(create_app(store, settings.options), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=tls)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}") from None
        port = runner.addresses[0][1] if runner.addresses else settings.port
        scheme = "https" if tls else "http"
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(f"central server listening on {scheme}://{host}:{port} ({store.db.dialect})", flush=True)
        stop = asyncio.Event()
        stop_on_signals(stop)
        if ready is not None:
            ready.set()
        await stop.wait()
        await runner.cleanup()
    finally:
        await store.db.close()
