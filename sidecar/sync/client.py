"""The device API of a central server, as the daemon's sync loop calls it (asynchronous).

One `DeviceClient` per enrollment: its own `aiohttp.ClientSession` (never the upstream
providers' session, so a slow central server cannot take the proxy's connections), the
device credential as a bearer token, and every failure turned into `SyncUnavailable`
(try again later: network errors, timeouts, 5xx, 429) or `SyncRefused` (the server said
no: 4xx; 401/403 mean the credential was revoked).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from sidecar.errors import SidecarError

CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 30.0
MAX_ANSWER = 16 * 1024 * 1024  # bytes; the largest answer (a policy) is bounded by the server's 4 MiB bodies


class SyncError(SidecarError):
    """A call to the central server failed; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class SyncUnavailable(SyncError):
    """The server could not be reached or failed; the call may be retried."""


class SyncRefused(SyncError):
    """The server refused the call; retrying the same call will not help."""

    @property
    def revoked(self) -> bool:
        """The device credential is no longer accepted."""
        return self.status in (401, 403)


class DeviceClient:
    """Calls one central server as one enrolled device."""

    def __init__(self, url: str, credential: str, *, session: aiohttp.ClientSession | None = None) -> None:
        self.url = url.rstrip("/")
        self._headers = {"authorization": f"Bearer {credential}", "accept": "application/json"}
        self._own = session is None
        self._session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=8, keepalive_timeout=60),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        """Close the session (when this client made it)."""
        if self._own:
            await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        seconds: float = CALL_TIMEOUT,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, parsed JSON or None, response headers); SyncUnavailable / SyncRefused on failure.

        A 304 is returned, not raised (the policy long-poll's "nothing newer")."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        hdrs = {**self._headers, **({"content-type": "application/json"} if data is not None else {}), **(headers or {})}
        try:
            async with self._session.request(
                method,
                self.url + path,
                data=data,
                params=query,
                headers=hdrs,
                timeout=aiohttp.ClientTimeout(total=seconds, sock_connect=CONNECT_TIMEOUT),
                allow_redirects=False,
            ) as resp:
                raw = await _read(resp, f"{self.url}{path}")
                status, rh = resp.status, {k.lower(): v for k, v in resp.headers.items()}
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise SyncUnavailable(f"cannot reach the central server at {self.url}: {_reason(e)}") from None
        if status == 304:
            return status, None, rh
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if 200 <= status < 300:
            if raw and parsed is None:
                raise SyncUnavailable(f"{self.url}{path}: {status} with a body that is not JSON", status)
            return status, parsed, rh
        message = _message(parsed, raw)
        retry = _retry_after(rh.get("retry-after"))
        if status >= 500 or status in (408, 429):
            raise SyncUnavailable(f"{self.url}{path}: {status} {message}", status, retry)
        raise SyncRefused(f"{self.url}{path}: {status} {message}", status, retry)

    async def policy(self, after: int | None, wait: float) -> dict[str, Any] | None:
        """The signed policy envelope; with `after`, held until a newer version exists or
        `wait` ends (then None)."""
        query = {} if after is None else {"after": str(after), "wait": f"{wait:g}"}
        status, body, _ = await self.call("GET", "/v1/policy", query=query, seconds=wait + CALL_TIMEOUT)
        if status == 304:
            return None
        if not isinstance(body, dict):
            raise SyncUnavailable(f"{self.url}/v1/policy: the answer is not a policy envelope", status)
        return body

    async def report(self, state: dict[str, Any]) -> None:
        """Tell the server which policy this device runs (or why it refused one) and how it syncs."""
        await self.call("POST", "/v1/device/status", state)

    async def upload(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Post usage records; the server's {accepted, duplicates, conflicts}."""
        _, body, _ = await self.call("POST", "/v1/usage", {"records": records})
        if not isinstance(body, dict):
            raise SyncUnavailable(f"{self.url}/v1/usage: the answer is not an object")
        return body

    async def lease(self, amount_usd: float, period: str, ttl_seconds: float) -> dict[str, Any]:
        """Ask for a slice of the shared budget pools."""
        _, body, _ = await self.call("POST", "/v1/leases", {"amount_usd": amount_usd, "period": period, "ttl_seconds": ttl_seconds})
        if not isinstance(body, dict):
            raise SyncUnavailable(f"{self.url}/v1/leases: the answer is not an object")
        return body

    async def lease_return(self, lease_id: str, used_usd: float) -> None:
        """Close a lease and give back what was not spent."""
        await self.call("POST", f"/v1/leases/{lease_id}/return", {"used_usd": used_usd})


async def _read(resp: aiohttp.ClientResponse, where: str) -> bytes:
    """The answer's body; SyncUnavailable past MAX_ANSWER, so that a broken server or a man
    in the middle cannot make the daemon read without end."""
    too_large = SyncUnavailable(f"{where}: the answer is larger than {MAX_ANSWER} bytes", resp.status)
    if (resp.content_length or 0) > MAX_ANSWER:
        raise too_large
    raw = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        raw += chunk
        if len(raw) > MAX_ANSWER:
            raise too_large
    return bytes(raw)


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


def _message(parsed: Any, raw: bytes) -> str:
    try:
        return str(parsed["error"]["message"]).removeprefix("claude-sidecar: ")
    except (KeyError, TypeError):
        return raw.decode(errors="replace")[:200]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
