"""A small synchronous client of the central API, for the admin and enroll commands."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from sidecar.errors import SidecarError


class CentralError(SidecarError):
    """The central server refused a call, or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class CentralClient:
    """Calls one central server with one bearer token."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        """Call the API and return its JSON answer; CentralError with the server's message."""
        q = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.url + path + ("?" + urllib.parse.urlencode(q) if q else "")
        headers = {"accept": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = json.loads(raw)["error"]["message"].removeprefix("claude-sidecar: ")
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace")[:200] or e.reason
            raise CentralError(f"{self.url}: {e.code} {message}", e.code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise CentralError(f"cannot reach the central server at {self.url}: {reason}") from None
