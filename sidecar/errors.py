"""The sidecar's own errors, and how each one reaches a client.

Hierarchy::

    SidecarError                      base; .status and .error_type say how it is sent
    ├── ConfigError                   the config file is unreadable or invalid (CLI: exit 1)
    ├── ClientError                   the request itself is wrong
    │   ├── InvalidRequest            400 invalid_request_error (malformed JSON, bad fields)
    │   ├── AuthenticationFailed      401 authentication_error (missing or wrong local token),
    │   │                             x-should-retry: false
    │   ├── PermissionDenied          403 permission_error (foreign Host, browser Origin)
    │   ├── PolicyDenied              400 invalid_request_error (a model, tool or provider the policy
    │   │   │                         denies; never a 403, which Claude Code reads as a failed login)
    │   │   └── PolicyBlocked         400 policy_blocked (a guardrail block), x-should-retry: false,
    │   │                             the audit entry's id as request_id
    │   ├── NotFound                  404 not_found_error (unknown path)
    │   ├── RequestTimeout            408 timeout_error (the head or body did not arrive in time)
    │   ├── RequestTooLarge           413 request_too_large (the body is over [server] max_body_mb)
    │   ├── NotSupported              501 not_supported, x-should-retry: false (an endpoint this
    │   │                             sidecar does not serve)
    │   └── RateLimited               429 rate_limit_error, retry-after: the real wait
    │       └── BudgetExhausted       429 billing_error, x-should-retry: false, retry-after: until
    │                                 the budget resets, with the unified rejection headers
    ├── StorageError                  the store cannot be opened at start (CLI: one line, exit 1)
    ├── StorageUnavailable            503 api_error, retry-after: usage cannot be recorded
    │                                 (full disk, read-only store); see sidecar.ledger.health
    ├── PolicyStale                   503 api_error, x-should-retry: false: the org's policy is
    │                                 older than its grace period and the org fails closed
    └── UpstreamError                 no byte has reached the client yet
        ├── UpstreamUnavailable       529 overloaded_error (connect failure, no answer)
        ├── UpstreamBadAnswer         502 api_error (an answer cut short, a 101, not final)
        └── UpstreamTimeout           504 timeout_error (no answer in time)

    StreamBroken                      not a SidecarError: the upstream failed after its answer
                                      started, so nothing can be sent; the client's connection
                                      is reset, never ended cleanly

Errors that an upstream returns are *not* SidecarErrors: they pass through unmodified,
because Claude Code matches on their wording. Every error this module defines is sent as
the Anthropic envelope ``{"type":"error","error":{"type":...,"message":...}}`` with a
message that names the sidecar as its source.
"""

from __future__ import annotations

import json

# The Anthropic API's HTTP status -> `error.type` (docs: "API errors"), the one table that
# translators of other providers' errors and the fake API use.
STATUS_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    """The Anthropic `error.type` for an HTTP status: the documented one; else an upstream's
    503 is `overloaded_error` (the API says 529), another 5xx `api_error`, anything else
    `invalid_request_error` (the API uses it "for other 4XX status codes")."""
    etype = STATUS_ERROR_TYPES.get(status)
    if etype is not None:
        return etype
    if status == 503:
        return "overloaded_error"
    return "api_error" if status >= 500 else "invalid_request_error"


class SidecarError(Exception):
    """Base of every error the sidecar raises itself."""

    status = 500
    error_type = "api_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    request_id: str | None = None  # set where the request's id is known; sent as the envelope's request_id

    def envelope(self) -> bytes:
        """The Anthropic error body for this error."""
        body: dict[str, object] = {"type": "error", "error": {"type": self.error_type, "message": f"claude-sidecar: {self.message}"}}
        if self.request_id is not None:
            body["request_id"] = self.request_id
        return json.dumps(body).encode()


class ConfigError(SidecarError):
    """The config file is unreadable or invalid; the message names the file, key and reason."""

    status = 500


class ClientError(SidecarError):
    """The request is at fault."""

    status = 400
    error_type = "invalid_request_error"


class InvalidRequest(ClientError):
    """Malformed JSON or a request the Messages API would reject."""


class AuthenticationFailed(ClientError):
    """The local token is missing or wrong; `x-should-retry: false`, since a retry with the
    same credentials cannot succeed (Claude Code would otherwise retry for minutes)."""

    status = 401
    error_type = "authentication_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"x-should-retry": "false", **(headers or {})})


class PermissionDenied(ClientError):
    """The request came from somewhere the sidecar does not serve (foreign Host, browser)."""

    status = 403
    error_type = "permission_error"


class PolicyDenied(ClientError):
    """The policy forbids this request (a model, a tool, a provider); retrying won't help.

    A 400 `invalid_request_error`, as Claude Code's gateway protocol has it for a denied
    model or a policy violation: a 403 would read to the client as a failed login."""


class PolicyBlocked(PolicyDenied):
    """A guardrail blocked the request's content: 400 `policy_blocked` with `x-should-retry:
    false`; the client shows the message and does not retry or fall back to another model.
    The handler sets `request_id` to the request's (and its audit entry's) id."""

    error_type = "policy_blocked"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"x-should-retry": "false", **(headers or {})})


class NotSupported(ClientError):
    """An endpoint this sidecar does not serve: 501 `not_supported` with `x-should-retry:
    false`, so the client falls back at once (e.g. counts tokens locally)."""

    status = 501
    error_type = "not_supported"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"x-should-retry": "false", **(headers or {})})


class RateLimited(ClientError):
    """A local rate limit refused the request; `retry-after` says when a retry will fit."""

    status = 429
    error_type = "rate_limit_error"


class BudgetExhausted(RateLimited):
    """A spending budget cannot fit the request until it resets: 429 `billing_error` with
    `x-should-retry: false`, `retry-after` to the reset and the protocol's
    `anthropic-ratelimit-unified-*` rejection headers (sidecar.gateway.unified)."""

    error_type = "billing_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"x-should-retry": "false", **(headers or {})})


class NotFound(ClientError):
    """No such endpoint."""

    status = 404
    error_type = "not_found_error"


class StorageError(SidecarError):
    """The usage store or its journal cannot be opened (a read-only or missing data dir)."""


class StorageUnavailable(SidecarError):
    """The sidecar cannot record usage now (a full disk, a read-only or failing store), so it
    serves no new request until it can."""

    status = 503
    error_type = "api_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"retry-after": "5", **(headers or {})})


class PolicyStale(SidecarError):
    """The org's central server has not been reached for longer than the org's grace period
    and the org says "closed": nothing is served until a fresh policy arrives. A 503 with
    `x-should-retry: false`, so Claude Code prints the sentence (what to do) at once instead
    of retrying for minutes, and no 400 that it would re-send without its betas."""

    status = 503
    error_type = "api_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"x-should-retry": "false", **(headers or {})})


class RequestTimeout(ClientError):
    """The client did not send its request head or body in time ([server] *_timeout_seconds)."""

    status = 408
    error_type = "timeout_error"


class RequestTooLarge(ClientError):
    """The request body is larger than [server] max_body_mb allows."""

    status = 413
    error_type = "request_too_large"


class UpstreamError(SidecarError):
    """The upstream could not be reached or did not answer, before any byte was sent."""

    status = 502
    error_type = "api_error"


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached, or broke off before the client got a byte."""

    status = 529
    error_type = "overloaded_error"


class UpstreamBadAnswer(UpstreamError):
    """The upstream's answer is unusable: cut short, or not a final HTTP answer (a 101)."""


class UpstreamTimeout(UpstreamError):
    """The upstream accepted the request but sent nothing in time."""

    status = 504
    error_type = "timeout_error"


class StreamBroken(Exception):
    """The upstream failed after its answer had started (the client connection is aborted)."""
