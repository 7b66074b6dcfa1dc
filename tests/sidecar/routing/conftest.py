"""Two or three fake Anthropic upstreams and a sidecar whose routes point at them."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import InProcessSidecar, sidecar_in_process


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeAnthropic]]:
    """Three fake upstreams: a, b and c."""
    async with FakeAnthropic() as a, FakeAnthropic() as b, FakeAnthropic() as c:
        yield [a, b, c]


def providers(fakes: list[FakeAnthropic], names: str = "abc") -> str:
    """A [[providers]] entry per fake, named a, b, c."""
    return "".join(
        f'[[providers]]\nname = "{n}"\ntype = "anthropic"\nbase_url = "{f.url}"\nconnect_timeout = 2\n\n'
        for n, f in zip(names, fakes, strict=False)
    )


def dead_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


SidecarFactory = Callable[[str], AbstractAsyncContextManager[InProcessSidecar]]


@pytest.fixture
def routed(hermetic_env: Path) -> SidecarFactory:
    """Start an in-process sidecar with the given config text."""

    def make(config_text: str) -> AbstractAsyncContextManager[InProcessSidecar]:
        return sidecar_in_process(config_text, hermetic_env)

    return make
