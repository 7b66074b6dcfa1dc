"""Google Application Default Credentials for Vertex AI.

Where the credentials come from, first found wins: the provider's `credentials_file`
option, ``GOOGLE_APPLICATION_CREDENTIALS``, then gcloud's default file
(``$CLOUDSDK_CONFIG`` or ``~/.config/gcloud`` or ``%APPDATA%\\gcloud``, file
``application_default_credentials.json``, written by ``gcloud auth application-default login``).

- `service_account` files: a JWT (RS256, signed with the file's private key) is exchanged
  for an access token at the file's `token_uri`;
- `authorized_user` files: the refresh token is exchanged at its `token_uri`.

Tokens are kept until shortly before they expire; one refresh runs at a time however many
requests wait for it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sidecar.errors import UpstreamError

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# A token is refreshed this long before it expires.
REFRESH_MARGIN_SECONDS = 300.0
JWT_LIFETIME_SECONDS = 3600
_REQUIRED = {
    "service_account": ("client_email", "private_key"),
    "authorized_user": ("client_id", "client_secret", "refresh_token"),
}


class GcpCredentialsError(UpstreamError):
    """No usable Google credentials, or the token endpoint refused them."""


def gcloud_config_dir(env: Mapping[str, str]) -> Path:
    """gcloud's configuration directory."""
    if env.get("CLOUDSDK_CONFIG"):
        return Path(env["CLOUDSDK_CONFIG"]).expanduser()
    if os.name == "nt" and env.get("APPDATA"):
        return Path(env["APPDATA"]) / "gcloud"
    home = Path(env.get("HOME") or Path.home())
    return home / ".config" / "gcloud"


def credentials_path(options: Mapping[str, Any], env: Mapping[str, str]) -> Path:
    """The credentials file to use (it may not exist: `load` says so clearly)."""
    configured = options.get("credentials_file")
    if isinstance(configured, str) and configured:
        return Path(configured).expanduser()
    if env.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return Path(env["GOOGLE_APPLICATION_CREDENTIALS"]).expanduser()
    return gcloud_config_dir(env) / "application_default_credentials.json"


@dataclass(frozen=True)
class GoogleCredentials:
    """A parsed credentials file."""

    kind: str  # service_account | authorized_user
    info: dict[str, Any]
    path: Path

    @property
    def token_uri(self) -> str:
        """Where tokens are obtained."""
        return str(self.info.get("token_uri") or DEFAULT_TOKEN_URI)

    @property
    def project(self) -> str | None:
        """The project the file names (`project_id`, else `quota_project_id`)."""
        p = self.info.get("project_id") or self.info.get("quota_project_id")
        return str(p) if p else None


def load(path: Path) -> GoogleCredentials:
    """Read and check a credentials file."""
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise GcpCredentialsError(
            f"no Google credentials: {path} does not exist; set `credentials_file` for the provider, "
            "GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`"
        ) from None
    except (OSError, ValueError) as e:
        raise GcpCredentialsError(f"cannot read Google credentials {path}: {e}") from None
    kind = info.get("type") if isinstance(info, dict) else None
    if kind not in _REQUIRED:
        raise GcpCredentialsError(
            f"{path}: credentials of type {kind!r} are not supported (use a service_account key or "
            "`gcloud auth application-default login`)"
        )
    missing = [k for k in _REQUIRED[kind] if not info.get(k)]
    if missing:
        raise GcpCredentialsError(f"{path}: {kind} credentials lack {', '.join(missing)}")
    return GoogleCredentials(kind, info, path)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def service_account_jwt(creds: GoogleCredentials, now: float) -> str:
    """The signed JWT a service account exchanges for an access token."""
    header = {"alg": "RS256", "typ": "JWT"}
    if creds.info.get("private_key_id"):
        header["kid"] = str(creds.info["private_key_id"])
    iat = int(now)
    claims = {"iss": creds.info["client_email"], "scope": SCOPE, "aud": creds.token_uri, "iat": iat, "exp": iat + JWT_LIFETIME_SECONDS}
    signing_input = _b64(msgspec.json.encode(header)) + "." + _b64(msgspec.json.encode(claims))
    try:
        key = serialization.load_pem_private_key(str(creds.info["private_key"]).encode(), password=None)
    except (ValueError, TypeError) as e:
        raise GcpCredentialsError(f"{creds.path}: the private_key cannot be read: {e}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise GcpCredentialsError(f"{creds.path}: the private_key is not an RSA key")
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64(signature)


def token_request(creds: GoogleCredentials, now: float) -> dict[str, str]:
    """The form fields of the token request for `creds`."""
    if creds.kind == "service_account":
        return {"grant_type": JWT_GRANT, "assertion": service_account_jwt(creds, now)}
    return {
        "grant_type": "refresh_token",
        "client_id": str(creds.info["client_id"]),
        "client_secret": str(creds.info["client_secret"]),
        "refresh_token": str(creds.info["refresh_token"]),
    }


class TokenSource:
    """Access tokens for one credentials file: cached, refreshed shortly before expiry,
    one refresh at a time."""

    def __init__(self, session: aiohttp.ClientSession, path: Path, timeout: float = 15.0) -> None:
        self.session = session
        self.path = path
        self.timeout = timeout
        self._creds: GoogleCredentials | None = None
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.refreshes = 0

    def credentials(self) -> GoogleCredentials:
        """The parsed credentials file (read once)."""
        if self._creds is None:
            self._creds = load(self.path)
        return self._creds

    def _valid(self) -> bool:
        return self._token is not None and time.time() < self._expires_at - REFRESH_MARGIN_SECONDS

    async def token(self) -> str:
        """A valid access token."""
        if self._valid():
            assert self._token is not None
            return self._token
        async with self._lock:
            if not self._valid():
                self._token, self._expires_at = await self._fetch()
                self.refreshes += 1
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        """Forget the cached token (the upstream refused it)."""
        self._token = None

    async def _fetch(self) -> tuple[str, float]:
        creds = self.credentials()
        now = time.time()
        form = token_request(creds, now)
        uri = creds.token_uri
        try:
            async with self.session.post(uri, data=form, timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                body = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise GcpCredentialsError(f"cannot reach the Google token endpoint {uri}: {e or 'timeout'}") from None
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            data = None
        if status != 200 or not isinstance(data, dict) or not data.get("access_token"):
            detail = ""
            if isinstance(data, dict):
                detail = str(data.get("error_description") or data.get("error") or "")
            detail = detail or body[:200].decode("utf-8", errors="replace")
            raise GcpCredentialsError(f"the Google token endpoint {uri} refused the {creds.kind} credentials of {creds.path} ({status}): {detail}")
        expires_in = float(data.get("expires_in") or 3600)
        return str(data["access_token"]), now + expires_in
