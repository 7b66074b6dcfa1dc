"""The server's Ed25519 policy-signing key and the signed policy envelope.

The envelope a device receives::

    {"payload": "<canonical JSON text>", "signature": "<base64 Ed25519 over the payload bytes>",
     "key_id": "..."}

and the payload names who it is for and when it was made::

    {"device_id": "dev_...", "version": 7, "issued_at": 1765000000.0, "policy": {...}}

`verify_envelope` is what a sidecar runs: the signature against the key it pinned at
enrollment, then the device id (no replay to another device) and the version (no rollback
to an older policy than the one it holds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sidecar.audit.chain import canonical


class SignatureInvalid(Exception):
    """A signed policy failed verification; the message says which check."""


@dataclass(frozen=True)
class SigningKey:
    """The private key and its public half as base64 (what devices pin)."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: str) -> SigningKey:
        """Load a PKCS#8 PEM private key."""
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 key")
        return cls(key)

    def to_pem(self) -> str:
        """The PKCS#8 PEM form (kept in the store, which must be protected accordingly)."""
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    @property
    def public_b64(self) -> str:
        """The raw 32-byte public key, base64."""
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    @property
    def key_id(self) -> str:
        """A short name of the public key."""
        return key_id(self.public_b64)

    def sign(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The envelope of `payload`."""
        text = canonical(payload)
        sig = self.private.sign(text.encode())
        return {"payload": text, "signature": base64.b64encode(sig).decode(), "key_id": self.key_id}


def key_id(public_b64: str) -> str:
    """The first 16 hex digits of the SHA-256 of the raw public key."""
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


def verify_envelope(
    envelope: Any, public_b64: str, device_id: str, min_version: int = 0
) -> dict[str, Any]:
    """The payload of a signed policy, after every check; raise SignatureInvalid otherwise.

    A version lower than `min_version` (the one the device holds) is refused as a rollback."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("payload"), str) or not isinstance(envelope.get("signature"), str):
        raise SignatureInvalid("not a signed policy envelope")
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64, validate=True))
        public.verify(base64.b64decode(envelope["signature"], validate=True), envelope["payload"].encode())
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureInvalid("the signature does not verify with the pinned key") from None
    payload = json.loads(envelope["payload"])
    if not isinstance(payload, dict):
        raise SignatureInvalid("the payload is not an object")
    if payload.get("device_id") != device_id:
        raise SignatureInvalid(f"the policy was issued to device {payload.get('device_id')!r}, not {device_id!r}")
    version = payload.get("version")
    if not isinstance(version, int) or version < min_version:
        raise SignatureInvalid(f"policy version {version!r} is older than the held version {min_version}")
    return payload
