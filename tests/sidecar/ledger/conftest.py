"""A real daemon (a child process) for the ledger's multi-process tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import ChildSidecar, anthropic_config, start_child


@pytest.fixture
def daemon(hermetic_env: Path, fake: FakeAnthropic) -> Iterator[ChildSidecar]:
    """`claude-sidecar start --foreground` against the fake upstream; SIGKILLed afterwards."""
    child = start_child(hermetic_env, anthropic_config(fake.url))
    try:
        yield child
    finally:
        child.proc.kill()
        child.proc.wait(10)
