"""Google ADC: service-account JWTs verified by the fake token endpoint, authorized users,
caching, single-flight refresh and clear errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sidecar.providers import gcp_auth
from sidecar.providers.gcp_auth import GcpCredentialsError, TokenSource, credentials_path
from sidecar.testing.fake_vertex import FakeVertex


@pytest.fixture
async def vertex() -> AsyncIterator[FakeVertex]:
    async with FakeVertex() as f:
        yield f


def write(tmp_path: Path, info: dict[str, object], name: str = "creds.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(info))
    return p


async def test_service_account_token_is_verified_and_cached(vertex: FakeVertex, tmp_path: Path) -> None:
    path = write(tmp_path, vertex.service_account_info())
    async with aiohttp.ClientSession() as s:
        src = TokenSource(s, path)
        tokens = await asyncio.gather(*(src.token() for _ in range(8)))
        assert len(set(tokens)) == 1 and tokens[0] in vertex.issued
        assert vertex.token_requests == 1 and vertex.token_failures == []
        assert src.credentials().project == "fake-project"


async def test_a_token_near_its_expiry_is_refreshed(vertex: FakeVertex, tmp_path: Path) -> None:
    vertex.token_lifetime = int(gcp_auth.REFRESH_MARGIN_SECONDS) + 1  # usable for about a second
    path = write(tmp_path, vertex.service_account_info())
    async with aiohttp.ClientSession() as s:
        src = TokenSource(s, path)
        first = await src.token()
        src._expires_at = 0.0  # the clock moved past the refresh point
        vertex.token_lifetime = 3600
        second = await src.token()
        assert first != second and vertex.token_requests == 2
        src.invalidate()
        assert await src.token() not in (first, second)


async def test_a_wrong_key_fails_signature_verification(vertex: FakeVertex, tmp_path: Path) -> None:
    other = FakeVertex()  # a different RSA key for the same account
    info = {**vertex.service_account_info(), "private_key": other.service_account_info()["private_key"]}
    async with aiohttp.ClientSession() as s:
        with pytest.raises(GcpCredentialsError, match="Invalid JWT Signature"):
            await TokenSource(s, write(tmp_path, info)).token()
    assert vertex.token_failures == ["Invalid JWT Signature."]


async def test_authorized_user_refresh_token(vertex: FakeVertex, tmp_path: Path) -> None:
    path = write(tmp_path, vertex.authorized_user_info())
    async with aiohttp.ClientSession() as s:
        src = TokenSource(s, path)
        assert await src.token() in vertex.issued
        assert src.credentials().project == "fake-project"  # quota_project_id
        bad = TokenSource(s, write(tmp_path, {**vertex.authorized_user_info(), "refresh_token": "revoked"}, "bad.json"))
        with pytest.raises(GcpCredentialsError, match="refused the authorized_user credentials"):
            await bad.token()


def test_where_credentials_are_looked_for(tmp_path: Path) -> None:
    assert credentials_path({"credentials_file": "/x/sa.json"}, {"GOOGLE_APPLICATION_CREDENTIALS": "/y"}) == Path("/x/sa.json")
    assert credentials_path({}, {"GOOGLE_APPLICATION_CREDENTIALS": "/y/sa.json"}) == Path("/y/sa.json")
    assert credentials_path({}, {"CLOUDSDK_CONFIG": "/g"}) == Path("/g/application_default_credentials.json")
    assert credentials_path({}, {"HOME": "/home/dev"}) == Path("/home/dev/.config/gcloud/application_default_credentials.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist.*gcloud auth application-default login"),
        ("not json", "cannot read Google credentials"),
        (json.dumps({"type": "external_account"}), "'external_account' are not supported"),
        (json.dumps({"type": "service_account", "client_email": "a@b"}), "lack private_key"),
        (json.dumps({"type": "service_account", "client_email": "a@b", "private_key": "garbage"}), "private_key cannot be read"),
    ],
)
async def test_bad_credentials_files_say_what_is_wrong(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "creds.json"
    if content is not None:
        path.write_text(content)
    async with aiohttp.ClientSession() as s:
        with pytest.raises(GcpCredentialsError, match=message):
            await TokenSource(s, path).token()


async def test_an_unreachable_token_endpoint(tmp_path: Path, vertex: FakeVertex) -> None:
    info = {**vertex.service_account_info(), "token_uri": "http://127.0.0.1:9/token"}
    async with aiohttp.ClientSession() as s:
        with pytest.raises(GcpCredentialsError, match="cannot reach the Google token endpoint"):
            await TokenSource(s, write(tmp_path, info)).token()
