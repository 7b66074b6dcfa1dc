"""Google Vertex AI: Claude through rawPredict / streamRawPredict.

The request is the Anthropic body with these changes only: `model` removed (it is in the
path), `anthropic_version: "vertex-2023-10-16"` added, and the `anthropic-beta` flags (header
and a body `anthropic_beta` list) filtered to what Vertex accepts, with the body fields a
dropped flag takes along (see `sidecar.providers.betas`). The answer, JSON or SSE, is passed
through untouched. count_tokens goes to Vertex's `count-tokens:rawPredict` (whose body keeps
`model`). Vertex's own errors (`{"error": {"code", "message", "status"}}`) are mapped to the
Anthropic envelope; errors the model itself returns are already Anthropic and pass as sent.

Credentials are Google ADC (see `sidecar.providers.gcp_auth`), or a configured key, which
is used as an OAuth access token as is. The project comes from the `project` option,
``ANTHROPIC_VERTEX_PROJECT_ID`` / ``GOOGLE_CLOUD_PROJECT``, else the credentials file.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp
import msgspec

from sidecar.errors import error_type_for
from sidecar.protocol.gemini_response import GOOGLE_ERRORS
from sidecar.providers import betas
from sidecar.providers.anthropic import PassthroughCall
from sidecar.providers.base import (
    Attempt,
    Call,
    StaticCall,
    Transport,
    UpstreamResponse,
    error_envelope,
    read_body,
)
from sidecar.providers.config import ProviderConfig
from sidecar.providers.gcp_auth import GcpCredentialsError, TokenSource, credentials_path
from sidecar.secrets import ResolvedKey

log = logging.getLogger(__name__)

ANTHROPIC_VERSION = "vertex-2023-10-16"
JSON = "application/json"


def vertex_body(body: dict[str, Any], flags: list[str], allowed: frozenset[str], keep_model: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The rawPredict body for an Anthropic request and the flags for the `anthropic-beta` header."""
    kept, dropped = betas.split(flags, allowed)
    out = betas.adapt(body, kept, dropped)
    if not keep_model:
        out.pop("model", None)
    if "anthropic_beta" in out:
        out["anthropic_beta"] = [f for f in betas.body_betas(out) if f in allowed]
        if not out["anthropic_beta"]:
            del out["anthropic_beta"]
    out["anthropic_version"] = ANTHROPIC_VERSION
    return out, kept


def map_error(status: int, raw: bytes) -> tuple[int, bytes]:
    """A Vertex error answer as (status, Anthropic envelope); model errors are already Anthropic."""
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]
    if isinstance(data, dict) and data.get("type") == "error" and isinstance(data.get("error"), dict):
        return status, raw
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or f"HTTP {status}")
        if str(err.get("status")) in GOOGLE_ERRORS:
            st, etype = GOOGLE_ERRORS[str(err["status"])]
            return (529 if st == 503 else st), error_envelope(etype, message)
    else:
        message = raw.decode("utf-8", errors="replace").strip() or f"HTTP {status}"
    return (529 if status == 503 else status), error_envelope(error_type_for(status), message)


def region_from(options: Mapping[str, Any], base_url: str, env: Mapping[str, str]) -> str | None:
    """The Vertex location: the `region` option, CLOUD_ML_REGION, else the base URL's host."""
    region = options.get("region") or env.get("CLOUD_ML_REGION")
    if isinstance(region, str) and region:
        return region
    host = urllib.parse.urlsplit(base_url).hostname or ""
    if host == "aiplatform.googleapis.com":
        return "global"
    if host.endswith("-aiplatform.googleapis.com"):
        return host.removesuffix("-aiplatform.googleapis.com")
    return None


def _static_error(status: int, etype: str, message: str) -> StaticCall:
    return StaticCall(error_envelope(etype, f"claude-sidecar: {message}"), status)


class VertexProvider:
    """Sends Anthropic requests to Claude on Vertex AI."""

    type = "vertex"

    def __init__(
        self, cfg: ProviderConfig, keys: list[ResolvedKey], session: aiohttp.ClientSession,
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.name = cfg.name
        self.keys = keys
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.transport = Transport(cfg, session)
        self.tokens = TokenSource(session, credentials_path(cfg.options, self.env))
        self.region = region_from(cfg.options, cfg.base_url, self.env)
        self.allowed_betas = betas.VERTEX_BETAS | frozenset(str(b) for b in cfg.options.get("betas", []))

    @property
    def injects_keys(self) -> bool:
        """Always: Vertex is reached with the sidecar's Google credentials, never the client's."""
        return True

    def project(self, static_token: bool) -> str:
        """The Google Cloud project (raises GcpCredentialsError naming where to set it)."""
        p = self.cfg.options.get("project") or self.env.get("ANTHROPIC_VERTEX_PROJECT_ID") or self.env.get("GOOGLE_CLOUD_PROJECT")
        if not p and not static_token:
            p = self.tokens.credentials().project
        if not p:
            raise GcpCredentialsError(f"provider {self.name}: no Google Cloud project; set `project` in its config")
        return str(p)

    def path(self, project: str, model: str, action: str) -> str:
        """The rawPredict path of `model`."""
        base = f"/v1/projects/{urllib.parse.quote(project, safe='')}/locations/{self.region}/publishers/anthropic/models"
        return f"{base}/{urllib.parse.quote(model, safe='@')}:{action}"

    async def send(self, attempt: Attempt) -> Call:
        """Send a messages or count_tokens request to Vertex AI."""
        path = attempt.path_qs.split("?", 1)[0]
        if attempt.method != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return _static_error(404, "not_found_error", f"provider {self.name} (vertex) does not serve {attempt.method} {path}")
        model = attempt.upstream_model
        if not model:
            return _static_error(400, "invalid_request_error", "the request has no `model`")
        if not self.region:
            return _static_error(500, "api_error", f"provider {self.name}: no Vertex region; set `region` in its config")
        static = attempt.key.value if attempt.key is not None else None
        project = self.project(static is not None)
        body = dict(attempt.json())
        flags = betas.parse([*attempt.headers.getall("anthropic-beta", []), *betas.body_betas(body)])
        if attempt.count_tokens:
            body["model"] = model
            payload, header_flags = vertex_body(body, flags, self.allowed_betas, keep_model=True)
            upath = self.path(project, "count-tokens", "rawPredict")
        else:
            payload, header_flags = vertex_body(body, flags, self.allowed_betas)
            upath = self.path(project, model, "streamRawPredict" if attempt.stream else "rawPredict")
        token = static or await self.tokens.token()
        headers = [("content-type", JSON), ("authorization", f"Bearer {token}")]
        if header_flags:
            headers.append(("anthropic-beta", ",".join(header_flags)))
        up = await self.transport.request("POST", upath, headers, msgspec.json.encode(payload))
        if up.status >= 400:
            return await self._error(up, static is not None)
        return PassthroughCall(up, self.name)

    async def _error(self, up: UpstreamResponse, static: bool) -> Call:
        raw = await read_body(up, self.name)
        up.release()
        if up.status == 401 and not static:
            self.tokens.invalidate()
        status, envelope = map_error(up.status, raw)
        return StaticCall(envelope, status, [("content-type", JSON)])

    def close(self) -> None:
        """Close pooled upstream connections."""
        self.transport.close()
