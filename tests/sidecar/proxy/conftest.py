"""A fake Anthropic upstream and an in-process sidecar pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import InProcessSidecar, anthropic_config, sidecar_in_process


@pytest.fixture
async def sidecar(fake: FakeAnthropic, hermetic_env: Path) -> AsyncIterator[InProcessSidecar]:
    async with sidecar_in_process(anthropic_config(fake.url), hermetic_env) as sc:
        yield sc
