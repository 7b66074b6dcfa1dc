"""Fixtures of the CLI tests."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import paths
from sidecar.cli.common import pid_alive
from sidecar.daemon_state import read_state
from sidecar.paths import Paths
from sidecar.testing.cli import wait_gone


@pytest.fixture
def home(hermetic_env: Path) -> Iterator[Paths]:
    """This test's sidecar paths; any daemon still running at the end is stopped."""
    p = paths.resolve()
    yield p
    state = read_state(p)
    pid = int(state["pid"]) if state else 0
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, 5):
            os.kill(pid, signal.SIGKILL)
