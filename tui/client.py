"""A small async client for the sidecar's control API (`/sidecar/v1/...`).

Errors form one tree::

    ControlError        the control API gave no usable answer
    ├── Unreachable     nothing answered at the address (refused, reset, timed out)
    ├── Unauthorized    the local token was refused (401 or 403)
    └── ApiError        any other non-2xx answer, with its status and message

A 404 on a GET is not an error: that part of the API is not there (the feature is not
configured, or the sidecar is older), and `get()` returns None.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from sidecar.cli.control import API, EVENTS_READ_TIMEOUT, Target, live
from sidecar.protocol.sse import Event, SSEReader


class ControlError(Exception):
    """The control API gave no usable answer."""


class Unreachable(ControlError):
    """Nothing answered at the sidecar's address."""


class Unauthorized(ControlError):
    """The sidecar refused the local token."""


class ApiError(ControlError):
    """A non-2xx answer other than a GET's 404."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ControlClient:
    """Calls one sidecar's control API over a shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, target: Target, timeout: float = 5.0) -> None:
        self.session = session
        self.target = target
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def get(self, path: str, **params: str) -> Any | None:
        """GET `API + path` and return its JSON, or None when the sidecar answers 404."""
        return await self._call("GET", path, params)

    async def post(self, path: str) -> Any:
        """POST to `API + path` and return its JSON (404 is an ApiError here)."""
        return await self._call("POST", path, {})

    async def _call(self, method: str, path: str, params: dict[str, str]) -> Any:
        url = self.target.url + API + path
        try:
            async with self.session.request(
                method, url, params=params, headers=self.target.headers, timeout=self.timeout
            ) as resp:
                body = await resp.read()
                if resp.status == 404 and method == "GET":
                    return None
                _raise_for(resp.status, body)
                return json.loads(body)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise Unreachable(f"{self.target.url}: {_reason(e)}") from e
        except ValueError as e:
            raise ApiError(200, f"{method} {path}: the answer is not JSON ({e})") from e

    async def events(self) -> AsyncIterator[Event]:
        """The live event stream, until the sidecar ends it; raises ControlError on failure."""
        timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=EVENTS_READ_TIMEOUT)
        reader = SSEReader()
        try:
            async with self.session.get(
                self.target.url + API + "/events", headers=self.target.headers, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    _raise_for(resp.status, await resp.read())
                    raise ApiError(resp.status, "the event stream did not open")
                async for chunk in resp.content.iter_any():
                    for event in live(reader.feed(chunk)):
                        yield event
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise Unreachable(f"{self.target.url}: {_reason(e)}") from e


def _raise_for(status: int, body: bytes) -> None:
    """Raise the ControlError for a non-2xx `status`; return for a 2xx."""
    if 200 <= status < 300:
        return
    message = _error_message(body)
    if status in (401, 403):
        raise Unauthorized(f"the sidecar refused the local token ({status}: {message})")
    raise ApiError(status, message)


def _error_message(body: bytes) -> str:
    """The message of an Anthropic-style error envelope, else the start of the body."""
    try:
        data = json.loads(body)
        return str(data["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", errors="replace") or "no message"


def _reason(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__
