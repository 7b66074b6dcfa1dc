"""`GET /managed/settings`: Claude Code managed settings from the config's [claude_code.settings].

The protocol's rules: the answer is `{"uuid", "checksum", "settings"}`; the checksum is
`sha256:` plus the hex SHA-256 of the settings as JSON with keys sorted at every level and
no whitespace (what the client computes over the settings it holds, JavaScript's
JSON.stringify); it is also the quoted ETag. A matching `If-None-Match` gets 304, and only
one that was sent (`*` is answered as if absent). No [claude_code.settings] at all is a 404
("no managed policy"), which differs from an empty table (an empty policy).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from aiohttp import web

from sidecar.appkeys import CONFIG
from sidecar.errors import NotFound
from sidecar.web_errors import error_response

_NAMESPACE = uuid.UUID("6f1c1d8e-52a4-4c1e-9a55-3f0e6f2b7c11")  # the sidecar's settings uuids


def _js(value: Any) -> Any:
    """`value` as JavaScript would write it: an integral float is an integer (1.0 -> 1)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _js(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js(v) for v in value]
    return value


def canonical(settings: dict[str, Any]) -> bytes:
    """The settings as the client hashes them: sorted keys, no whitespace, UTF-8."""
    return json.dumps(_js(settings), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def checksum(settings: dict[str, Any]) -> str:
    """`sha256:<hex>` of the canonical settings JSON."""
    return "sha256:" + hashlib.sha256(canonical(settings)).hexdigest()


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return etag in tags


async def managed_settings(request: web.Request) -> web.StreamResponse:
    """The managed settings document, its ETag and the 304/404 rules (module docstring)."""
    settings = request.app[CONFIG].claude_code.settings
    if settings is None:
        return error_response(NotFound("no managed settings: this sidecar's config has no [claude_code.settings]"))
    sum_ = checksum(settings)
    etag = f'"{sum_}"'
    headers = {"etag": etag, "cache-control": "no-cache"}
    inm = request.headers.get("if-none-match", "").strip()
    if inm and inm != "*" and _matches(inm, etag):
        return web.Response(status=304, headers=headers)
    doc = {"uuid": str(uuid.uuid5(_NAMESPACE, sum_)), "checksum": sum_, "settings": _js(settings)}
    return web.json_response(doc, headers=headers)
