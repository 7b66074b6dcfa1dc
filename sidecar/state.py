"""The running daemon's state file and the local token: cheap to read from any command."""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

from sidecar.paths import Paths, make_private


def load_or_create_token(paths: Paths) -> str:
    """The local token, created once (mode 0600) and kept across restarts."""
    try:
        token = paths.token_file.read_text().strip()
        if token:
            make_private(paths.token_file, 0o600)  # a 0666 token file is tightened (and logged)
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    make_private(paths.state_dir, 0o700)
    fd = os.open(paths.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_state(paths: Paths) -> dict[str, Any] | None:
    """The running daemon's state file, if there is one."""
    try:
        data = json.loads(paths.state_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(paths: Paths, state: dict[str, Any]) -> None:
    """Replace the state file atomically."""
    tmp = paths.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, paths.state_file)
