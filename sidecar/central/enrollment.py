"""This sidecar's enrollment with a central server: where it is kept and how it is read.

The device credential lives in the keyring (or the announced 0600 file fallback of
`sidecar.secrets`) under `CREDENTIAL_NAME`; the rest, including the pinned policy-signing
public key, in ``central.json`` in the data dir (mode 0600). The sync loop reads both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sidecar.paths import Paths, replace_file
from sidecar.secrets import SecretStore

CREDENTIAL_NAME = "central-device"


@dataclass(frozen=True)
class Enrollment:
    """Where this sidecar is enrolled, as whom, and the key it pinned."""

    url: str
    device_id: str
    developer_id: str
    public_key: str  # base64 raw Ed25519 key that every policy must verify with
    key_id: str
    enrolled_at: float


def enrollment_file(p: Paths) -> Path:
    """The enrollment record."""
    return p.data_dir / "central.json"


def secret_store(p: Paths) -> SecretStore:
    """The credential store the CLI's `keys` command uses too."""
    return SecretStore(p.config_dir / "credentials.json")


def load(p: Paths) -> Enrollment | None:
    """The enrollment, if this sidecar has one."""
    try:
        data = json.loads(enrollment_file(p).read_text())
        return Enrollment(**data)
    except (FileNotFoundError, ValueError, TypeError):
        return None


def save(p: Paths, enrollment: Enrollment) -> None:
    """Write the enrollment record (0600)."""
    path = enrollment_file(p)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    replace_file(path, json.dumps(asdict(enrollment), indent=2))


def remove(p: Paths) -> None:
    """Forget the enrollment record."""
    enrollment_file(p).unlink(missing_ok=True)
