"""The running daemon's state file and the local token: cheap to read from any command."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

from sidecar.errors import ConfigError, StorageError
from sidecar.paths import Paths, lock_fd, make_private, replace_file


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
    replace_file(paths.state_file, json.dumps(state, indent=2))


LOCK_FILE = "daemon.lock"


@contextlib.contextmanager
def hold_data_dir(paths: Paths) -> Iterator[None]:
    """Hold the data dir for this daemon's lifetime, or raise ConfigError naming the daemon
    that holds it. Two daemons on one data dir would both replay and delete the journal and
    fork the audit chain; the state file cannot stop two that start at the same instant.

    The lock is on a file of its own: a lock on, or a descriptor closed on, the database
    would drop sqlite's own POSIX locks (sidecar.ledger.store)."""
    path = paths.data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:  # a read-only or missing data dir: the store could not be opened either
        raise StorageError(f"cannot open the usage store in {paths.data_dir}: {e}") from None
    try:
        try:
            lock_fd(fd, wait=False)
        except OSError:
            holder = _holder(fd)
            raise ConfigError(
                f"another claude-sidecar (pid {holder or '?'}) is serving the data dir {paths.data_dir}; "
                "stop it first, or give this one its own CLAUDE_SIDECAR_HOME"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _holder(fd: int, wait: float = 1.0) -> str:
    """The pid the holder of the lock wrote in the lock file. A daemon that has just taken
    the lock writes its pid a moment later, so an empty file is read again for up to `wait`
    seconds before the pid is given as unknown."""
    if not hasattr(os, "pread"):
        return "?"
    deadline = time.monotonic() + wait
    while True:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if holder or time.monotonic() >= deadline:
            return holder or "?"
        time.sleep(0.01)
