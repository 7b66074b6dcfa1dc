"""Gateway sign-in on the sidecar: the OAuth 2.0 device flow Claude Code runs on `/login`.

Endpoints (RFC 8414 discovery, RFC 8628 device grant, refresh, RFC 7009 revocation), all
unauthenticated and answered directly with `{"error", "error_description"}` on failure:

- `GET /.well-known/oauth-authorization-server`: the metadata, on the origin the client used;
- `POST /oauth/device_authorization`: a device code (256 bits) and a user code (base-20,
  `WDJB-MJHT`) that the local user approves with `claude-sidecar login-approve CODE` (the
  control API, which needs the local token: a web page cannot approve anything);
- `POST /oauth/token`: `authorization_pending` until approved, then an access token and a
  refresh token; the refresh grant rotates both, and an unknown or used refresh token is
  `401 invalid_grant`, which makes the client sign in again;
- `POST /oauth/revoke`: forgets an access or refresh token (200 whatever it was);
- `GET /oauth/device`: a page that says how to approve.

Tokens are opaque (`csgw_` and 256 random bits), valid on this sidecar only, expire
(access one hour, refresh 30 days), are kept only as SHA-256 digests (in the state dir, mode
0600, so a restart keeps clients signed in) and never leave the machine: ingress takes a
`csgw_` bearer off the request before anything goes upstream, and refuses an unknown or
expired one with `401` and `x-should-retry: false`. They grant the proxied endpoints only,
never the control API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from sidecar.paths import replace_file

log = logging.getLogger(__name__)

PREFIX = "csgw_"
ACCESS_SECONDS = 3600
REFRESH_SECONDS = 30 * 86400
HANDED_OVER_SECONDS = 24 * 3600  # a token `claude-sidecar run` hands to Claude Code (no refresh)
DEVICE_SECONDS = 600
MAX_PENDING = 32  # sign-ins waiting for approval at once (a local flood gets 429 slow_down)
POLL_INTERVAL = 2  # seconds between the client's token polls (loopback: no need for 5)
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1: base-20, no vowels
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
OPEN_PATHS = frozenset(
    {"/.well-known/oauth-authorization-server", "/oauth/device_authorization", "/oauth/token", "/oauth/revoke", "/oauth/device"}
)
TOKENS_FILE = "gateway-tokens.json"

Clock = Callable[[], float]


def digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """An opaque sidecar gateway token."""
    return PREFIX + secrets.token_urlsafe(32)


def new_user_code() -> str:
    """`WDJB-MJHT`: eight base-20 letters (about 34 bits), easy to read and type."""
    letters = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
    return f"{letters[:4]}-{letters[4:]}"


def normal_code(code: str) -> str:
    """A user code as typed (`wdjbmjht`, `WDJB MJHT`) in its canonical form."""
    letters = "".join(c for c in code.upper() if c.isalpha())
    return f"{letters[:4]}-{letters[4:]}" if len(letters) == 8 else code.strip().upper()


@dataclass
class Grant:
    """A stored token: its kind (access, refresh), expiry and family (one sign-in)."""

    kind: str
    expires_at: float
    family: str
    surface: str = ""


@dataclass
class Device:
    """A device authorization waiting for approval."""

    user_code: str
    expires_at: float
    surface: str
    approved: bool = False
    denied: bool = False
    last_poll: float | None = None


class TokenError(Exception):
    """An OAuth error answer: `error`, a description and the HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class GatewayAuth:
    """Device codes and tokens of this sidecar's gateway sign-in."""

    def __init__(self, path: Path | None, clock: Clock = time.time) -> None:
        self.path = path
        self.clock = clock
        self.devices: dict[str, Device] = {}  # digest(device_code) -> Device
        self.grants: dict[str, Grant] = self._load()

    # ------------------------------------------------------------------ persistence

    def _load(self) -> dict[str, Grant]:
        if self.path is None:
            return {}
        try:
            raw = json.loads(self.path.read_text())
            now = self.clock()
            return {k: Grant(**v) for k, v in raw.items() if float(v["expires_at"]) > now}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError) as e:
            log.warning("gateway tokens in %s are unreadable (%s); clients sign in again", self.path, e)
            return {}

    def _save(self) -> None:
        if self.path is None:
            return
        now = self.clock()
        self.grants = {k: g for k, g in self.grants.items() if g.expires_at > now}
        replace_file(self.path, json.dumps({k: asdict(g) for k, g in self.grants.items()}))

    # ------------------------------------------------------------------ the device flow

    def start_device(self, surface: str = "") -> tuple[str, Device]:
        """A new device code and its pending authorization."""
        now = self.clock()
        self.devices = {k: d for k, d in self.devices.items() if d.expires_at > now}
        if len(self.devices) >= MAX_PENDING:
            raise TokenError("slow_down", f"{MAX_PENDING} sign-ins are already waiting for approval", 429)
        code = secrets.token_urlsafe(32)
        device = Device(new_user_code(), now + DEVICE_SECONDS, surface[:64])
        self.devices[digest(code)] = device
        return code, device

    def approve(self, user_code: str) -> bool:
        """Approve the pending sign-in showing `user_code`; False when there is none."""
        want, now = normal_code(user_code), self.clock()
        for d in self.devices.values():
            if d.user_code == want and d.expires_at > now and not d.denied:
                d.approved = True
                return True
        return False

    def pending(self) -> list[dict[str, Any]]:
        """The sign-ins waiting for approval (for the CLI and the TUI)."""
        now = self.clock()
        return [
            {"user_code": d.user_code, "surface": d.surface, "expires_in": round(d.expires_at - now)}
            for d in self.devices.values()
            if d.expires_at > now and not d.approved and not d.denied
        ]

    def poll(self, device_code: str) -> dict[str, Any]:
        """The token answer for a device code, or raise the OAuth error the client expects."""
        key, now = digest(device_code), self.clock()
        d = self.devices.get(key)
        if d is None:
            raise TokenError("invalid_grant", "unknown or already used device_code")
        if d.expires_at <= now:
            del self.devices[key]
            raise TokenError("expired_token", "the sign-in code expired; run /login again")
        if d.denied:
            del self.devices[key]
            raise TokenError("access_denied", "the sign-in was denied")
        if not d.approved:
            slow = d.last_poll is not None and now - d.last_poll < POLL_INTERVAL - 0.5
            d.last_poll = now
            if slow:
                raise TokenError("slow_down", "polling faster than the interval")
            raise TokenError("authorization_pending", f"approve it with: claude-sidecar login-approve {d.user_code}")
        del self.devices[key]  # single use
        return self.issue(d.surface)

    # ------------------------------------------------------------------ tokens

    def issue(self, surface: str = "", *, refresh: bool = True, access_seconds: int = ACCESS_SECONDS) -> dict[str, Any]:
        """A new access token (and refresh token) in a new family."""
        return self._issue(secrets.token_hex(8), surface, refresh, access_seconds)

    def _issue(self, family: str, surface: str, refresh: bool, access_seconds: int) -> dict[str, Any]:
        now = self.clock()
        access = new_token()
        self.grants[digest(access)] = Grant("access", now + access_seconds, family, surface)
        out: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": access_seconds}
        if refresh:
            token = new_token()
            self.grants[digest(token)] = Grant("refresh", now + REFRESH_SECONDS, family, surface)
            out["refresh_token"] = token
        self._save()
        return out

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Rotate a refresh token: a new pair, the old refresh token spent."""
        g = self.grants.pop(digest(refresh_token), None)
        if g is None or g.kind != "refresh" or g.expires_at <= self.clock():
            self._save()
            raise TokenError("invalid_grant", "the refresh token is unknown, used or expired; sign in again", 401)
        return self._issue(g.family, g.surface, True, ACCESS_SECONDS)

    def revoke(self, token: str) -> None:
        """Forget `token` (RFC 7009: whatever it was, the answer is the same)."""
        if self.grants.pop(digest(token), None) is not None:
            self._save()

    def valid(self, token: str) -> bool:
        """Whether `token` is a live access token of this sidecar."""
        g = self.grants.get(digest(token))
        return g is not None and g.kind == "access" and g.expires_at > self.clock()


GATEWAY = web.AppKey("gateway", GatewayAuth)


# ---------------------------------------------------------------------- HTTP


def _oauth_error(e: TokenError) -> web.Response:
    return web.json_response({"error": e.error, "error_description": e.description}, status=e.status, headers={"cache-control": "no-store"})


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def metadata(request: web.Request) -> web.Response:
    """RFC 8414 metadata, on the origin the client used (the client insists on the same origin)."""
    base = _base(request)
    return web.json_response(
        {
            "issuer": base,
            "device_authorization_endpoint": base + "/oauth/device_authorization",
            "token_endpoint": base + "/oauth/token",
            "revocation_endpoint": base + "/oauth/revoke",
            "grant_types_supported": [DEVICE_GRANT, "refresh_token"],
        }
    )


async def device_authorization(request: web.Request) -> web.Response:
    """RFC 8628 §3.2: a device code and the user code to approve."""
    form = await request.post()
    try:
        code, d = request.app[GATEWAY].start_device(str(form.get("surface", "")))
    except TokenError as e:
        return _oauth_error(e)
    base = _base(request)
    return web.json_response(
        {
            "device_code": code,
            "user_code": d.user_code,
            "verification_uri": base + "/oauth/device",
            "verification_uri_complete": f"{base}/oauth/device?user_code={d.user_code}",
            "expires_in": DEVICE_SECONDS,
            "interval": POLL_INTERVAL,
            "login_notice": f"Approve this sign-in in a terminal: claude-sidecar login-approve {d.user_code}",
        },
        headers={"cache-control": "no-store"},
    )


async def token(request: web.Request) -> web.Response:
    """The device grant and the refresh grant."""
    form = await request.post()
    grant = str(form.get("grant_type", ""))
    auth = request.app[GATEWAY]
    try:
        if grant == DEVICE_GRANT:
            answer = auth.poll(str(form.get("device_code", "")))
        elif grant == "refresh_token":
            answer = auth.refresh(str(form.get("refresh_token", "")))
        else:
            raise TokenError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
    except TokenError as e:
        return _oauth_error(e)
    return web.json_response(answer, headers={"cache-control": "no-store"})


async def revoke(request: web.Request) -> web.Response:
    """RFC 7009: forget the token."""
    form = await request.post()
    request.app[GATEWAY].revoke(str(form.get("token", "")))
    return web.Response(status=200)


async def device_page(request: web.Request) -> web.Response:
    """What the browser shows: approval happens in a terminal, never from a web page."""
    code = normal_code(request.query.get("user_code", "")) or "the code Claude Code shows"
    text = (
        "claude-sidecar gateway sign-in\n\n"
        f"To let Claude Code use this sidecar, run in a terminal on this machine:\n\n"
        f"    claude-sidecar login-approve {code}\n"
    )
    return web.Response(text=text)


async def approve(request: web.Request) -> web.Response:
    """Control API: approve a pending sign-in by its user code."""
    code = request.match_info["code"]
    ok = request.app[GATEWAY].approve(code)
    return web.json_response({"approved": ok, "user_code": normal_code(code)}, status=200 if ok else 404)


async def pending(request: web.Request) -> web.Response:
    """Control API: the sign-ins waiting for approval."""
    return web.json_response({"pending": request.app[GATEWAY].pending()})


async def hand_over(request: web.Request) -> web.Response:
    """Control API: a token for a Claude Code that `claude-sidecar run` starts (no refresh token:
    the client takes none with a handed-over token)."""
    answer = request.app[GATEWAY].issue("claude-sidecar run", refresh=False, access_seconds=HANDED_OVER_SECONDS)
    return web.json_response(answer, headers={"cache-control": "no-store"})


def add_routes(app: web.Application, state_dir: Path | None) -> None:
    """The sign-in endpoints and their control API; tokens kept in `state_dir`."""
    app[GATEWAY] = GatewayAuth(state_dir / TOKENS_FILE if state_dir is not None else None)
    app.router.add_get("/.well-known/oauth-authorization-server", metadata)
    app.router.add_post("/oauth/device_authorization", device_authorization)
    app.router.add_post("/oauth/token", token)
    app.router.add_post("/oauth/revoke", revoke)
    app.router.add_get("/oauth/device", device_page)
    app.router.add_post("/sidecar/v1/gateway/approve/{code}", approve)
    app.router.add_get("/sidecar/v1/gateway/pending", pending)
    app.router.add_post("/sidecar/v1/gateway/token", hand_over)
