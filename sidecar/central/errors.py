"""The central server's own client errors (children of `sidecar.errors.ClientError`).

    ClientError (sidecar.errors)
    ├── Conflict          409 invalid_request_error: the name exists, the record id was
    │                     used with other content, the version moved
    └── PayloadTooLarge   413 request_too_large: the body is over the server's cap

The rest come from `sidecar.errors`: InvalidRequest 400, AuthenticationFailed 401,
PermissionDenied 403, NotFound 404, RateLimited 429.
"""

from __future__ import annotations

from sidecar.errors import ClientError


class Conflict(ClientError):
    """The request clashes with what is stored."""

    status = 409


class PayloadTooLarge(ClientError):
    """The request body is larger than the server accepts."""

    status = 413
    error_type = "request_too_large"
