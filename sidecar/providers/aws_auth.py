"""AWS credentials and request signing for Bedrock.

Two ways to authenticate, tried in this order:

1. **Bedrock API keys** (`Authorization: Bearer ...`): the provider's configured key, else
   ``AWS_BEARER_TOKEN_BEDROCK``.
2. **SigV4** with the standard credential chain:
   - ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``), unless the
     provider names a profile;
   - the shared credentials and config files (``AWS_SHARED_CREDENTIALS_FILE``,
     ``AWS_CONFIG_FILE``, default ``~/.aws/credentials`` and ``~/.aws/config``) for the profile
     in ``options.profile``, else ``AWS_PROFILE``, else ``default``; re-read when they change;
   - container credentials (``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`` or ``..._FULL_URI``,
     with ``AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]``), refreshed before they expire.

The signer follows the SigV4 specification: the canonical URI is the path as sent, encoded
once more (every service but S3), so a model id like ``anthropic.claude-v2:1`` that goes on
the wire as ``...claude-v2%3A1`` is signed as ``...claude-v2%253A1``.
"""

from __future__ import annotations

import asyncio
import configparser
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import os
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from sidecar.errors import UpstreamError

log = logging.getLogger(__name__)

ALGORITHM = "AWS4-HMAC-SHA256"
# Temporary credentials are refreshed this long before they expire.
REFRESH_MARGIN_SECONDS = 300.0
CONTAINER_HOST = "http://169.254.170.2"
CONTAINER_TIMEOUT_SECONDS = 5.0
_CONTAINER_HOSTS = ("169.254.170.2", "169.254.170.23", "fd00:ec2::23")
_UNRESOLVED = ("role_arn", "sso_session", "sso_start_url", "credential_process", "web_identity_token_file")


class AwsCredentialsError(UpstreamError):
    """No usable AWS credentials: the message says where the sidecar looked and what to do."""


@dataclass(frozen=True)
class AwsCredentials:
    """One set of AWS credentials; `expires_at` (epoch seconds) is None for long-lived keys."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    expires_at: float | None = None
    source: str = ""

    def fresh(self, now: float) -> bool:
        """True while the credentials are usable without a refresh."""
        return self.expires_at is None or now < self.expires_at - REFRESH_MARGIN_SECONDS


# ---------------------------------------------------------------- SigV4


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _quote(s: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(s, safe=safe)


def canonical_uri(path: str) -> str:
    """The SigV4 canonical URI of a path as sent on the wire (non-S3: dot segments removed,
    then every character but unreserved ones and '/' percent-encoded once more)."""
    if not path:
        return "/"
    segments: list[str] = []
    for seg in path.split("/")[1:]:
        if seg == "..":
            if segments:
                segments.pop()
        elif seg not in (".", ""):
            segments.append(seg)
    norm = "/" + "/".join(segments)
    if path.endswith("/") and norm != "/":
        norm += "/"
    return _quote(norm, safe="/-_.~")


def canonical_query(query: str) -> str:
    """The SigV4 canonical query string: pairs sorted, keys and values encoded strictly."""
    if not query:
        return ""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(pairs))


def _canonical_headers(headers: list[tuple[str, str]]) -> tuple[str, str]:
    merged: dict[str, list[str]] = {}
    for k, v in headers:
        merged.setdefault(k.lower().strip(), []).append(" ".join(v.split()))
    names = sorted(merged)
    return "".join(f"{n}:{','.join(merged[n])}\n" for n in names), ";".join(names)


@dataclass(frozen=True)
class SigningInput:
    """What SigV4 covers: the request as it will be sent."""

    method: str
    path: str  # as sent on the wire (already percent-encoded)
    query: str
    headers: list[tuple[str, str]]  # every header to sign, `host` included
    body: bytes


def canonical_request(req: SigningInput, payload_hash: str) -> tuple[str, str]:
    """The canonical request and the signed-headers list."""
    chead, signed = _canonical_headers(req.headers)
    text = "\n".join(
        [req.method.upper(), canonical_uri(req.path), canonical_query(req.query), chead, signed, payload_hash]
    )
    return text, signed


def signature(req: SigningInput, secret_access_key: str, region: str, service: str, amz_date: str) -> tuple[str, str]:
    """The SigV4 signature of `req` (whose headers already hold X-Amz-Date and any token),
    and its signed-headers list. Also what a server computes to check a request."""
    date = amz_date[:8]
    creq, signed = canonical_request(req, hashlib.sha256(req.body).hexdigest())
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_access_key).encode(), date), region), service), "aws4_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signed


def sign(req: SigningInput, creds: AwsCredentials, region: str, service: str, now: dt.datetime) -> list[tuple[str, str]]:
    """The headers to add to `req`: `X-Amz-Date`, `X-Amz-Security-Token` (temporary
    credentials) and `Authorization` (the date and token headers are signed too)."""
    amz_date = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    added = [("X-Amz-Date", amz_date)]
    if creds.session_token:
        added.append(("X-Amz-Security-Token", creds.session_token))
    full = SigningInput(req.method, req.path, req.query, [*req.headers, *added], req.body)
    sig, signed = signature(full, creds.secret_access_key, region, service, amz_date)
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    auth = f"{ALGORITHM} Credential={creds.access_key_id}/{scope}, SignedHeaders={signed}, Signature={sig}"
    return [*added, ("Authorization", auth)]


# ---------------------------------------------------------------- shared files


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())


def credentials_file(env: Mapping[str, str]) -> Path:
    """The shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials)."""
    p = env.get("AWS_SHARED_CREDENTIALS_FILE")
    return Path(p).expanduser() if p else _home(env) / ".aws" / "credentials"


def config_file(env: Mapping[str, str]) -> Path:
    """The shared config file (AWS_CONFIG_FILE or ~/.aws/config)."""
    p = env.get("AWS_CONFIG_FILE")
    return Path(p).expanduser() if p else _home(env) / ".aws" / "config"


def _read_ini(path: Path) -> configparser.ConfigParser | None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AwsCredentialsError(f"cannot read {path}: {e}") from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as e:
        raise AwsCredentialsError(f"{path} is not a valid AWS config file: {e}") from None
    return parser


def profile_section(env: Mapping[str, str], profile: str, in_config: bool) -> dict[str, str] | None:
    """A profile's keys from the credentials file or (in_config) the config file."""
    path = config_file(env) if in_config else credentials_file(env)
    parser = _read_ini(path)
    if parser is None:
        return None
    names = ([profile] if profile == "default" else [f"profile {profile}", profile]) if in_config else [profile]
    for name in names:
        if parser.has_section(name):
            return {k.strip().lower(): v.strip() for k, v in parser.items(name)}
    return None


def profile_region(env: Mapping[str, str], profile: str) -> str | None:
    """The `region` of a profile in the config file, if any."""
    section = profile_section(env, profile, in_config=True)
    return section.get("region") if section else None


def _from_section(section: dict[str, str], where: str) -> AwsCredentials | None:
    key, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    if key and secret:
        return AwsCredentials(key, secret, section.get("aws_session_token") or None, None, where)
    return None


def file_credentials(env: Mapping[str, str], profile: str) -> AwsCredentials | None:
    """Long-lived keys of `profile` from the credentials file, else the config file."""
    for in_config in (False, True):
        section = profile_section(env, profile, in_config)
        if section is None:
            continue
        path = config_file(env) if in_config else credentials_file(env)
        creds = _from_section(section, f"profile {profile!r} in {path}")
        if creds is not None:
            return creds
        unresolved = [k for k in _UNRESOLVED if k in section]
        if unresolved:
            raise AwsCredentialsError(
                f"profile {profile!r} in {path} uses {', '.join(unresolved)}, which the sidecar does not resolve; "
                f"export temporary keys instead (`aws configure export-credentials --profile {profile} --format env`)"
            )
    return None


# ---------------------------------------------------------------- container credentials


def _parse_expiration(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise AwsCredentialsError(f"container credentials have an unreadable Expiration {value!r}") from None


def container_endpoint(env: Mapping[str, str]) -> tuple[str, str | None] | None:
    """The container credentials URL and its authorization token, when configured."""
    rel = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    full = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    if rel:
        url = CONTAINER_HOST + rel
    elif full:
        url = full
        parts = urllib.parse.urlsplit(full)
        if parts.scheme != "https" and not _allowed_http_host(parts.hostname or ""):
            raise AwsCredentialsError(
                f"AWS_CONTAINER_CREDENTIALS_FULL_URI {full!r} must use https or a loopback/container host"
            )
    else:
        return None
    token = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise AwsCredentialsError(f"cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {token_file}: {e}") from None
    return url, token


def _allowed_http_host(host: str) -> bool:
    if host in _CONTAINER_HOSTS or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def fetch_container_credentials(
    session: aiohttp.ClientSession, url: str, token: str | None
) -> AwsCredentials:
    """GET the container credentials endpoint and parse its answer."""
    headers = {"Authorization": token} if token else {}
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=CONTAINER_TIMEOUT_SECONDS)) as resp:
            body = await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise AwsCredentialsError(f"cannot fetch container credentials from {url}: {e or 'timeout'}") from None
    if status != 200:
        raise AwsCredentialsError(
            f"container credentials endpoint {url} answered {status}: {body[:200].decode('utf-8', 'replace')}"
        )
    try:
        data = msgspec.json.decode(body)
        creds = AwsCredentials(
            data["AccessKeyId"], data["SecretAccessKey"], data.get("Token") or None,
            _parse_expiration(data.get("Expiration")), f"container credentials ({url})",
        )  # fmt: skip
    except (msgspec.DecodeError, KeyError, TypeError) as e:
        raise AwsCredentialsError(f"container credentials endpoint {url} sent an unreadable answer: {e}") from None
    return creds


# ---------------------------------------------------------------- the chain


class CredentialChain:
    """Resolves AWS credentials in the standard order, caches them, and refreshes temporary
    ones before they expire (one refresh at a time, however many requests wait)."""

    def __init__(
        self, session: aiohttp.ClientSession, profile: str | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.session = session
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.explicit_profile = profile
        self.profile = profile or self.env.get("AWS_PROFILE") or self.env.get("AWS_DEFAULT_PROFILE") or "default"
        self._cached: AwsCredentials | None = None
        self._files_stamp: tuple[float, float] | None = None
        self._lock = asyncio.Lock()

    def _stamp(self) -> tuple[float, float]:
        out = []
        for p in (credentials_file(self.env), config_file(self.env)):
            try:
                out.append(p.stat().st_mtime)
            except OSError:
                out.append(-1.0)
        return out[0], out[1]

    def _usable(self, now: float) -> bool:
        c = self._cached
        if c is None or not c.fresh(now):
            return False
        # Keys read from the shared files are re-read when a file changes (e.g. a new login).
        return self._files_stamp is None or self._files_stamp == self._stamp()

    async def get(self) -> AwsCredentials:
        """Credentials that are valid now (raises AwsCredentialsError with what to do)."""
        if self._usable(time.time()):
            assert self._cached is not None
            return self._cached
        seen = self._cached
        async with self._lock:
            now = time.time()
            c = self._cached
            # Another waiter refreshed while this one waited: use its result, even if the
            # endpoint hands out keys that are already inside the refresh margin.
            if c is not None and (self._usable(now) or (c is not seen and (c.expires_at is None or now < c.expires_at))):
                return c
            self._cached = await self._resolve()
            log.debug("AWS credentials from %s", self._cached.source)
            return self._cached

    async def _resolve(self) -> AwsCredentials:
        self._files_stamp = None
        env = self.env
        if not self.explicit_profile and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            return AwsCredentials(
                env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN") or None,
                None, "environment (AWS_ACCESS_KEY_ID)",
            )  # fmt: skip
        stamp = self._stamp()
        creds = file_credentials(env, self.profile)
        if creds is not None:
            self._files_stamp = stamp
            return creds
        endpoint = container_endpoint(env)
        if endpoint is not None:
            return await fetch_container_credentials(self.session, *endpoint)
        raise AwsCredentialsError(
            f"no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, add profile {self.profile!r} to "
            f"{credentials_file(env)}, set AWS_BEARER_TOKEN_BEDROCK, or store a Bedrock API key "
            "(claude-sidecar keys set <provider>)"
        )

    def invalidate(self) -> None:
        """Forget the cached credentials (e.g. after the upstream said they expired)."""
        self._cached = None


def resolve_region(options: Mapping[str, Any], base_url: str, env: Mapping[str, str], profile: str) -> str | None:
    """The signing region: options.region, AWS_REGION / AWS_DEFAULT_REGION, the profile's region,
    else the one in a `bedrock-runtime.REGION.amazonaws.com` base URL."""
    region = options.get("region")
    if isinstance(region, str) and region:
        return region
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if env.get(var):
            return env[var]
    try:
        from_profile = profile_region(env, profile)
    except AwsCredentialsError:
        from_profile = None
    if from_profile:
        return from_profile
    host = urllib.parse.urlsplit(base_url).hostname or ""
    parts = host.split(".")
    if len(parts) >= 4 and parts[0].startswith("bedrock") and parts[-2:] == ["amazonaws", "com"]:
        return parts[1]
    return None
