"""Tokens: random, shown once, stored as SHA-256 hashes, one prefix per kind.

    csa_...   an admin user's API token (role admin or viewer)
    csd_...   an enrolled device's credential
    cse_...   a one-time, expiring enrollment token for a developer

The prefix says which kind a token is before any lookup, so a device credential can never
be taken for an admin token (or the other way round), and a leaked token is recognisable
by secret scanners.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ADMIN, DEVICE, ENROLLMENT = "csa_", "csd_", "cse_"
KINDS = (ADMIN, DEVICE, ENROLLMENT)


def new_token(kind: str) -> str:
    """A fresh token of `kind` (256 random bits)."""
    assert kind in KINDS
    return kind + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form: hex SHA-256 (the token cannot be recovered from it)."""
    return hashlib.sha256(token.encode()).hexdigest()


def matches(token: str, stored_hash: str) -> bool:
    """Whether `token` hashes to `stored_hash`, compared in constant time."""
    return hmac.compare_digest(hash_token(token), stored_hash)


def new_id(prefix: str) -> str:
    """A short public id such as ``dev_3kq...`` (not a secret)."""
    return prefix + secrets.token_hex(8)
