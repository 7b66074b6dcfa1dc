"""A fake Vertex AI (Claude publisher endpoints) and Google OAuth token endpoint on loopback.

- `POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{model}:rawPredict` and
  `:streamRawPredict`: the Anthropic body with Vertex's rules checked (`anthropic_version`
  `vertex-2023-10-16`, no `model`, only the flags Vertex accepts), answered like the
  Anthropic API (the fake Anthropic's behaviours: text, tool use, errors, cuts ...);
- `POST .../publishers/anthropic/models/count-tokens:rawPredict` (the body keeps `model`);
- `POST /token`: the OAuth token endpoint. A service account's JWT is verified with the
  account's public key (RS256, issuer, audience, scope, lifetime); an authorized user's
  refresh token is checked. Tokens it issues are the only ones the model endpoints take.

`service_account_info()` gives a credentials file for a fresh RSA key whose `token_uri`
points here. `token_lifetime` sets `expires_in`; `token_requests` counts exchanges.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sidecar.providers import betas
from sidecar.providers.gcp_auth import JWT_GRANT, SCOPE
from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_behaviours import DEFAULT_REPLY, Behaviour

if TYPE_CHECKING:
    from pytest import MonkeyPatch

PREFIX = "/v1/projects/{project}/locations/{region}/publishers/anthropic/models/"
CLIENT_ID = "fake-client.apps.googleusercontent.com"


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class FakeVertex(FakeAnthropic):
    """A fake Vertex AI for Claude, with its own token endpoint."""

    def __init__(self, *, project: str = "fake-project", region: str = "us-east5", default: Behaviour | None = None) -> None:
        super().__init__(default=default or DEFAULT_REPLY)
        self.project = project
        self.region = region
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.client_email = f"sidecar@{project}.iam.gserviceaccount.com"
        self.refresh_token = "1//fake-refresh-" + secrets.token_urlsafe(8)
        self.client_secret = "fake-client-secret"
        self.token_lifetime = 3600
        self.token_requests = 0
        self.token_failures: list[str] = []
        self.issued: set[str] = set()
        prefix = PREFIX.format(project="{project}", region="{region}")
        self.app.router.add_post("/token", self._token)
        self.app.router.add_post(prefix + "{model_action}", self._predict)

    # ------------------------------------------------------------ credentials files

    def service_account_info(self) -> dict[str, Any]:
        """A service_account credentials file for the fake's key."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return {
            "type": "service_account", "project_id": self.project, "private_key_id": "fakekeyid1",
            "private_key": pem, "client_email": self.client_email, "client_id": "1234567890",
            "token_uri": self.url + "/token",
        }  # fmt: skip

    def authorized_user_info(self) -> dict[str, Any]:
        """An authorized_user credentials file (as `gcloud auth application-default login` writes)."""
        return {
            "type": "authorized_user", "client_id": CLIENT_ID, "client_secret": self.client_secret,
            "refresh_token": self.refresh_token, "quota_project_id": self.project, "token_uri": self.url + "/token",
        }  # fmt: skip

    # ------------------------------------------------------------ OAuth

    def _token_error(self, reason: str) -> web.Response:
        self.token_failures.append(reason)
        return web.json_response({"error": "invalid_grant", "error_description": reason}, status=400)

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
        grant = form.get("grant_type")
        if grant == JWT_GRANT:
            reason = self._check_jwt(form.get("assertion", ""))
        elif grant == "refresh_token":
            ok = (form.get("client_id"), form.get("client_secret"), form.get("refresh_token")) == (
                CLIENT_ID, self.client_secret, self.refresh_token)  # fmt: skip
            reason = None if ok else "Bad Request: the refresh token or client is wrong"
        else:
            reason = f"unsupported grant_type {grant!r}"
        if reason is not None:
            return self._token_error(reason)
        token = "ya29.fake-" + secrets.token_urlsafe(16)
        self.issued.add(token)
        return web.json_response({"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"})

    def _check_jwt(self, assertion: str) -> str | None:
        parts = assertion.split(".")
        if len(parts) != 3:
            return "the assertion is not a JWT"
        try:
            header = msgspec.json.decode(_b64decode(parts[0]))
            claims = msgspec.json.decode(_b64decode(parts[1]))
            self.key.public_key().verify(
                _b64decode(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return "Invalid JWT Signature."
        except (ValueError, msgspec.DecodeError) as e:
            return f"the JWT cannot be read: {e}"
        now = time.time()
        if header.get("alg") != "RS256":
            return f"unexpected alg {header.get('alg')!r}"
        if claims.get("iss") != self.client_email:
            return f"unknown issuer {claims.get('iss')!r}"
        if claims.get("aud") != self.url + "/token":
            return f"wrong audience {claims.get('aud')!r}"
        if SCOPE not in str(claims.get("scope", "")).split():
            return "the cloud-platform scope is missing"
        iat, exp = claims.get("iat", 0), claims.get("exp", 0)
        if not (iat - 300 <= now <= exp) or exp - iat > 3600:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
        return None

    # ------------------------------------------------------------ the model endpoints

    def _google_error(self, status: int, rpc: str, message: str) -> web.Response:
        return web.json_response({"error": {"code": status, "message": message, "status": rpc}}, status=status)

    async def _predict(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.record(request, body)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.issued:
            return self._google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        info = request.match_info
        if (info["project"], info["region"]) != (self.project, self.region):
            return self._google_error(404, "NOT_FOUND", f"Project {info['project']} or location {info['region']} not found.")
        model, _, action = info["model_action"].partition(":")
        flags = betas.parse(request.headers.getall("anthropic-beta", []))
        bad = [f for f in flags if f not in betas.VERTEX_BETAS]
        if bad:
            return self._error(400, "invalid_request_error", f"Unexpected value(s) `{','.join(bad)}` for the `anthropic-beta` header.")
        try:
            payload = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return self._google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(payload, dict):
            return self._google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        problem = check_vertex_body(payload, flags, counting=model == "count-tokens")
        if problem is not None:
            return self._error(400, "invalid_request_error", problem)
        if model == "count-tokens" and action == "rawPredict":
            return web.json_response({"input_tokens": sse.estimate_tokens(body)})
        if action not in ("rawPredict", "streamRawPredict"):
            return self._google_error(404, "NOT_FOUND", f"unknown method {action!r}")
        behaviour = self.next_behaviour()
        payload = {**payload, "model": model, "stream": action == "streamRawPredict"}
        return await self._perform(request, behaviour, payload, body)


def check_vertex_body(body: dict[str, Any], flags: list[str], counting: bool) -> str | None:
    """What Vertex would refuse in a Claude request body, or None."""
    if body.get("anthropic_version") != "vertex-2023-10-16":
        return f"anthropic_version: Input should be 'vertex-2023-10-16', got {body.get('anthropic_version')!r}"
    if "model" in body and not counting:
        return "model: Extra inputs are not permitted"
    if counting and not body.get("model"):
        return "model: Field required"
    body_flags = betas.body_betas(body)
    for f in body_flags:
        if f not in betas.VERTEX_BETAS:
            return f"anthropic_beta: unexpected value {f!r}"
    allowed = set(flags) | set(body_flags)
    if "context_management" in body and "context-management-2025-06-27" not in allowed:
        return "context_management: Extra inputs are not permitted"
    oc = body.get("output_config")
    if isinstance(oc, dict) and "effort" in oc:
        return "output_config.effort: Extra inputs are not permitted"
    for i, m in enumerate(body.get("messages") or []):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
    return None


# ---------------------------------------------------------------- for tests


def clean_google_env(monkeypatch: MonkeyPatch, tmp_path: Path) -> None:
    """No Google setting of the developer leaks in."""
    for name in list(os.environ):
        if name.startswith(("GOOGLE_", "CLOUDSDK_", "CLOUD_ML_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "gcp-home"))


def vertex_config(fake: FakeVertex, creds: Path, project: bool = True) -> str:
    """Config text with one Vertex provider pointed at the fake."""
    extra = f'project = "{fake.project}"\n' if project else ""
    return (f'[[providers]]\nname = "vertex"\ntype = "vertex"\nbase_url = "{fake.url}"\nregion = "{fake.region}"\n'
            f'credentials_file = "{creds}"\n{extra}')  # fmt: skip
