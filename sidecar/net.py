"""Small network facts shared by ingress and the upstream side."""

from __future__ import annotations

import functools
import ipaddress
import urllib.parse
import urllib.request


@functools.lru_cache(maxsize=256)
def host_is_loopback(host: str | None) -> bool:
    """True for `localhost`, `*.localhost`, 127.0.0.0/8 and ::1, with or without a port."""
    if not host:
        return False
    h = host.strip().lower()
    if h.startswith("["):
        h = h[1 : h.find("]")] if "]" in h else h[1:]
    elif h.count(":") == 1:
        h = h.rsplit(":", 1)[0]
    h = h.rstrip(".")
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def upstream_proxy(base_url: str) -> str | None:
    """The HTTP(S) proxy for `base_url` from HTTPS_PROXY/HTTP_PROXY and NO_PROXY; never one
    for a loopback upstream (a local model server is not behind the corporate proxy)."""
    parts = urllib.parse.urlsplit(base_url)
    host = parts.hostname or ""
    if host_is_loopback(host) or urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(parts.scheme)
