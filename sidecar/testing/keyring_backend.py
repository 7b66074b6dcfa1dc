"""A keyring backend for tests: a JSON file named by CLAUDE_SIDECAR_TEST_KEYRING.

Selected with ``PYTHON_KEYRING_BACKEND=sidecar.testing.keyring_backend.FileKeyring`` so the
CLI in the test process and a daemon in a child process see the same keys, and no test
ever touches the developer's real keyring.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    """Stores passwords in the JSON file named by CLAUDE_SIDECAR_TEST_KEYRING."""

    priority = 1

    def _path(self) -> Path:
        return Path(os.environ["CLAUDE_SIDECAR_TEST_KEYRING"])

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self._path().read_text())
        except FileNotFoundError:
            return {}
        return dict(data)

    def get_password(self, service: str, username: str) -> str | None:
        """The stored password, if any."""
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        """Store a password."""
        data = self._load()
        data[f"{service}/{username}"] = password
        self._path().write_text(json.dumps(data))

    def delete_password(self, service: str, username: str) -> None:
        """Remove a password or raise PasswordDeleteError."""
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError(username)
        self._path().write_text(json.dumps(data))
