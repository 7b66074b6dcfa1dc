"""SigV4 against botocore's signer, and the AWS credential chain with real files and env."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sidecar.providers import aws_auth
from sidecar.providers.aws_auth import (
    AwsCredentials,
    AwsCredentialsError,
    CredentialChain,
    SigningInput,
    canonical_uri,
    resolve_region,
    sign,
)

NOW = dt.datetime(2026, 11, 28, 12, 30, 45, tzinfo=dt.UTC)
CREDS = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
TEMP = AwsCredentials("ASIATEMP", "secret/temp", "FQoGZXIvYXdzE//token==")


def botocore_authorization(method: str, url: str, headers: dict[str, str], body: bytes, creds: AwsCredentials) -> str:
    req = AWSRequest(method=method, url=url, data=body, headers=headers)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        SigV4Auth(Credentials(creds.access_key_id, creds.secret_access_key, creds.session_token), "bedrock", "us-west-2").add_auth(req)
    return str(req.headers["Authorization"])


@pytest.mark.parametrize(
    "path",
    [
        "/model/anthropic.claude-opus-4-8-v1%3A0/invoke",
        "/model/us.anthropic.claude-sonnet-5-v1%3A0/invoke-with-response-stream",
        "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Aapplication-inference-profile%2Fab12cd34/converse",
        "/model/meta.llama4-maverick-17b-instruct-v1%3A0/count-tokens",
        "/model/with%20space%2Bplus/converse-stream",
    ],
)
@pytest.mark.parametrize("creds", [CREDS, TEMP], ids=["long-lived", "temporary"])
def test_signature_matches_botocore(path: str, creds: AwsCredentials) -> None:
    body = b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
    host = "bedrock-runtime.us-west-2.amazonaws.com"
    headers = {"content-type": "application/json", "accept": "application/json"}
    ours = sign(SigningInput("POST", path, "", [("host", host), *headers.items()], body), creds, "us-west-2", "bedrock", NOW)
    theirs = botocore_authorization("POST", f"https://{host}{path}", headers, body, creds)
    assert dict(ours)["Authorization"] == theirs
    assert dict(ours)["X-Amz-Date"] == "20261128T123045Z"
    assert dict(ours).get("X-Amz-Security-Token") == creds.session_token


def test_signature_with_query_and_port_matches_botocore() -> None:
    host = "127.0.0.1:8443"
    headers = {"content-type": "application/json"}
    ours = sign(SigningInput("GET", "/a/b", "z=1&a=x%2Fy&a=b", [("host", host), *headers.items()], b""), CREDS, "us-west-2", "bedrock", NOW)
    theirs = botocore_authorization("GET", f"https://{host}/a/b?z=1&a=x%2Fy&a=b", headers, b"", CREDS)
    assert dict(ours)["Authorization"] == theirs


def test_canonical_uri_encodes_the_wire_path_once_more() -> None:
    assert canonical_uri("/model/a%3Ab/invoke") == "/model/a%253Ab/invoke"
    assert canonical_uri("/model/a:b/invoke") == "/model/a%3Ab/invoke"
    assert canonical_uri("/a/./b/../c//d/") == "/a/c/d/"
    assert canonical_uri("") == "/"


# ---------------------------------------------------------------- the credential chain


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), **extra}


async def test_environment_keys_come_first(tmp_path: Path) -> None:
    env = _env(tmp_path, AWS_ACCESS_KEY_ID="AKENV", AWS_SECRET_ACCESS_KEY="s3cret", AWS_SESSION_TOKEN="tok")
    async with aiohttp.ClientSession() as s:
        creds = await CredentialChain(s, env=env).get()
    assert (creds.access_key_id, creds.secret_access_key, creds.session_token) == ("AKENV", "s3cret", "tok")


async def test_shared_files_profiles(tmp_path: Path) -> None:
    cred_file = tmp_path / "creds"
    cred_file.write_text("[default]\naws_access_key_id = AKDEF\naws_secret_access_key = d\n\n[work]\naws_access_key_id = AKWORK\naws_secret_access_key = w\naws_session_token = wt\n")
    cfg_file = tmp_path / "config"
    cfg_file.write_text("[profile cfgonly]\naws_access_key_id = AKCFG\naws_secret_access_key = c\nregion = eu-central-1\n")
    env = _env(tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(cred_file), AWS_CONFIG_FILE=str(cfg_file))
    async with aiohttp.ClientSession() as s:
        assert (await CredentialChain(s, env=env).get()).access_key_id == "AKDEF"
        work = await CredentialChain(s, env={**env, "AWS_PROFILE": "work"}).get()
        assert (work.access_key_id, work.session_token) == ("AKWORK", "wt")
        # A configured profile wins over AWS_PROFILE and over environment keys.
        env_keys = {**env, "AWS_PROFILE": "work", "AWS_ACCESS_KEY_ID": "AKENV", "AWS_SECRET_ACCESS_KEY": "x"}
        assert (await CredentialChain(s, "cfgonly", env=env_keys).get()).access_key_id == "AKCFG"
    assert resolve_region({}, "http://127.0.0.1:1", env, "cfgonly") == "eu-central-1"


async def test_a_changed_credentials_file_is_read_again(tmp_path: Path) -> None:
    cred_file = tmp_path / "creds"
    cred_file.write_text("[default]\naws_access_key_id = AKOLD\naws_secret_access_key = o\n")
    env = _env(tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(cred_file))
    async with aiohttp.ClientSession() as s:
        chain = CredentialChain(s, env=env)
        assert (await chain.get()).access_key_id == "AKOLD"
        cred_file.write_text("[default]\naws_access_key_id = AKNEW\naws_secret_access_key = n\n")
        import os

        st = cred_file.stat()
        os.utime(cred_file, (st.st_atime, st.st_mtime + 5))
        assert (await chain.get()).access_key_id == "AKNEW"


async def test_role_profiles_get_a_clear_error(tmp_path: Path) -> None:
    cfg_file = tmp_path / "config"
    cfg_file.write_text("[profile sso]\nsso_session = corp\nsso_account_id = 1\n")
    env = _env(tmp_path, AWS_CONFIG_FILE=str(cfg_file), AWS_PROFILE="sso")
    async with aiohttp.ClientSession() as s:
        with pytest.raises(AwsCredentialsError, match="export-credentials --profile sso"):
            await CredentialChain(s, env=env).get()


async def test_nothing_found_says_where_to_put_credentials(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as s:
        with pytest.raises(AwsCredentialsError, match=r"AWS_ACCESS_KEY_ID.*AWS_BEARER_TOKEN_BEDROCK"):
            await CredentialChain(s, env=_env(tmp_path)).get()


class ContainerEndpoint:
    """A container credentials endpoint on loopback that hands out short-lived keys."""

    def __init__(self, token: str, lifetime: float) -> None:
        self.token = token
        self.lifetime = lifetime
        self.calls = 0
        self.seen_auth: list[str | None] = []

    async def handler(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.seen_auth.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != self.token:
            return web.json_response({"message": "unauthorized"}, status=403)
        exp = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.lifetime)
        return web.json_response({
            "AccessKeyId": f"ASIACONTAINER{self.calls}", "SecretAccessKey": "cs", "Token": f"ctok{self.calls}",
            "Expiration": exp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        })  # fmt: skip


@pytest.fixture
async def container() -> AsyncIterator[tuple[ContainerEndpoint, str]]:
    ep = ContainerEndpoint("Bearer ecs-token", lifetime=3600)
    app = web.Application()
    app.router.add_get("/v2/credentials/abc", ep.handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield ep, f"http://127.0.0.1:{port}/v2/credentials/abc"
    await runner.cleanup()


async def test_container_credentials_with_token_file_refresh_before_expiry(tmp_path: Path, container: tuple[ContainerEndpoint, str]) -> None:
    ep, url = container
    token_file = tmp_path / "token"
    token_file.write_text("Bearer ecs-token\n")
    env = _env(tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI=url, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token_file))
    async with aiohttp.ClientSession() as s:
        chain = CredentialChain(s, env=env)
        first = await chain.get()
        assert first.access_key_id == "ASIACONTAINER1" and first.session_token == "ctok1"
        assert (await chain.get()).access_key_id == "ASIACONTAINER1"  # cached
        assert ep.calls == 1 and ep.seen_auth == ["Bearer ecs-token"]
        # Within the refresh margin of the expiry, a new set is fetched.
        ep.lifetime = aws_auth.REFRESH_MARGIN_SECONDS - 1
        chain.invalidate()
        short = await chain.get()
        assert short.access_key_id == "ASIACONTAINER2" and not short.fresh(dt.datetime.now(dt.UTC).timestamp())
        import asyncio

        got = await asyncio.gather(*(chain.get() for _ in range(5)))
        assert {c.access_key_id for c in got} == {"ASIACONTAINER3"}  # one refresh for five waiters
        assert ep.calls == 3


async def test_container_credentials_refused(tmp_path: Path, container: tuple[ContainerEndpoint, str]) -> None:
    _, url = container
    env = _env(tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI=url, AWS_CONTAINER_AUTHORIZATION_TOKEN="Bearer wrong")
    async with aiohttp.ClientSession() as s:
        with pytest.raises(AwsCredentialsError, match="answered 403"):
            await CredentialChain(s, env=env).get()


def test_full_uri_must_be_local_or_https(tmp_path: Path) -> None:
    with pytest.raises(AwsCredentialsError, match="must use https"):
        aws_auth.container_endpoint({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://evil.example.com/creds"})
    assert aws_auth.container_endpoint({"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/x"}) == ("http://169.254.170.2/v2/x", None)


def test_region_sources() -> None:
    assert resolve_region({"region": "ap-south-1"}, "", {"AWS_REGION": "x"}, "default") == "ap-south-1"
    assert resolve_region({}, "", {"HOME": "/nonexistent", "AWS_DEFAULT_REGION": "us-east-2"}, "default") == "us-east-2"
    assert resolve_region({}, "https://bedrock-runtime.eu-west-3.amazonaws.com", {"HOME": "/nonexistent"}, "default") == "eu-west-3"
    assert resolve_region({}, "http://127.0.0.1:9", {"HOME": "/nonexistent"}, "default") is None


def test_unreadable_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "creds"
    bad.write_text("this is not ini\n[")
    with pytest.raises(AwsCredentialsError, match="not a valid AWS config file"):
        aws_auth.file_credentials({"AWS_SHARED_CREDENTIALS_FILE": str(bad)}, "default")
