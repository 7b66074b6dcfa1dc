"""Shared pieces of the Bedrock tests: a clean AWS environment, the fake, a sidecar before it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from sidecar.testing.fake_bedrock import AwsKeys, FakeBedrock
from sidecar.testing.harness import InProcessSidecar, sidecar_in_process


def clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: AwsKeys | None) -> None:
    """No AWS setting of the developer leaks in; `keys` (if any) are exported."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "aws-home"))
    if keys is not None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys.access_key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys.secret_access_key)
        if keys.session_token:
            monkeypatch.setenv("AWS_SESSION_TOKEN", keys.session_token)


def bedrock_config(url: str, extra: str = "") -> str:
    """Config text with one Bedrock provider pointed at the fake."""
    return f'[[providers]]\nname = "bedrock"\ntype = "bedrock"\nbase_url = "{url}"\nregion = "us-east-1"\n{extra}'


@asynccontextmanager
async def bedrock_sidecar(fake: FakeBedrock, home: Path, extra: str = "") -> AsyncIterator[InProcessSidecar]:
    """A sidecar whose only provider is the fake Bedrock."""
    async with sidecar_in_process(bedrock_config(fake.url, extra), home) as sc:
        yield sc
