"""Secrets sent through a real sidecar with debug logging on never reach a file under its home."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import string
from pathlib import Path

import aiohttp
import pytest

from sidecar.observability.logs import MASK, Redactor, redactor_for
from sidecar.policy.config import GuardrailsConfig
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config, start_child

RNG = random.Random(18)


def _chars(alphabet: str, n: int) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(n))


PROVIDER_KEY = "sk-ant-api03-" + _chars(string.ascii_letters + string.digits + "-_", 93) + "AA"
CLIENT_KEY = "sk-ant-api03-" + _chars(string.ascii_letters + string.digits + "-_", 93) + "AA"
AWS_KEY_ID = "AKIA" + _chars(string.ascii_uppercase + "234567", 16)
AWS_SECRET = _chars(string.ascii_letters + string.digits + "+/", 40)
_PEM_LINES = [base64.b64encode(RNG.randbytes(48)).decode() for _ in range(6)]
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(_PEM_LINES) + "\n-----END RSA PRIVATE KEY-----"


def _prompt(token: str) -> str:
    return (f"deploy with aws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n"
            f"and this key:\n{PRIVATE_KEY}\nmy local token is {token}, the provider key {PROVIDER_KEY}, "
            f"and mine {CLIENT_KEY}")


def _needles(token: str) -> dict[str, bytes]:
    """Each secret, and the parts of the private key that would survive re-encoding (JSON, SQL)."""
    out = {"token": token, "provider key": PROVIDER_KEY, "client key": CLIENT_KEY, "aws key id": AWS_KEY_ID,
           "aws secret": AWS_SECRET, **{f"private key line {i}": line for i, line in enumerate(_PEM_LINES)}}
    return {k: v.encode() for k, v in out.items()}


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_reaches_any_file_under_the_sidecar_home(fake: FakeAnthropic, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, log_format: str) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SC_TEST_PROVIDER_KEY", PROVIDER_KEY)
    cfg = anthropic_config(fake.url, 'keys = ["env:SC_TEST_PROVIDER_KEY"]\n') + (
        f'[observability]\nlog_level = "debug"\nlog_format = "{log_format}"\n'
        '[policy]\ndeny_models = ["claude-denied-*"]\nlog_content = false\n[limits]\nrequests_per_minute = 2\n'
    )
    child = await asyncio.to_thread(start_child, home, cfg, None, 20.0, None, ("--debug",))
    try:
        token = child.token
        hdrs = {"x-sidecar-token": token, "x-api-key": CLIENT_KEY, "x-aws-key": AWS_KEY_ID,
                "content-type": "application/json", "x-claude-code-session-id": "s1"}
        async with aiohttp.ClientSession() as client:
            for stream in (False, True):
                body = {"model": "claude-x-1", "max_tokens": 20, "stream": stream,
                        "messages": [{"role": "user", "content": _prompt(token)}]}
                async with client.post(child.url + "/v1/messages", json=body, headers=hdrs) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()
            # Refused by the sidecar itself: over the rate limit (429), a wrong token (401), a
            # browser's Origin (403), a model the policy denies (400).
            async with client.post(child.url + "/v1/messages", json=body, headers=hdrs) as resp:
                assert resp.status == 429, await resp.text()
            async with client.post(child.url + "/v1/messages", json=body,
                                   headers={"authorization": f"Bearer {AWS_SECRET}", "x-api-key": CLIENT_KEY}) as resp:
                assert resp.status == 401
            async with client.post(child.url + "/v1/messages", json=body, headers={**hdrs, "origin": "http://evil.test"}) as resp:
                assert resp.status == 403
            denied = {**body, "model": "claude-denied-1", "stream": False}
            async with client.post(child.url + "/v1/messages", json=denied, headers=hdrs) as resp:
                assert resp.status == 400, await resp.text()
            async with client.get(child.url + "/sidecar/v1/status", headers={"authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
        assert ("x-api-key", PROVIDER_KEY) in [(k.lower(), v) for k, v in fake.requests[0].headers]  # the key was really injected upstream
    finally:
        assert await asyncio.to_thread(child.stop) == 0

    # Everything but the token's own file (mode 0600, where clients read it) and the config.
    files = [p for p in home.rglob("*") if p.is_file() and p not in (home / "state" / "token", home / "config.toml")]
    names = {p.name for p in files}
    assert {"sidecar.log", "sidecar.db", "child.log"} <= names, names
    for p in files:
        data = p.read_bytes()
        for what, needle in _needles(token).items():
            assert needle not in data, f"{what} found in {p.relative_to(home)}"

    log = (home / "logs" / "sidecar.log").read_text()
    lines = [ln for ln in log.splitlines() if ln.strip()]
    assert any("DEBUG sidecar.proxy.stages: request" in ln or '"level": "DEBUG"' in ln for ln in lines)  # debug logging was really on
    if log_format == "json":
        records = [json.loads(ln) for ln in lines]
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["ts"]) for r in records)
        text = "\n".join(r["msg"] for r in records)
    else:
        assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", ln) for ln in lines if not ln.startswith(" "))
        text = log
    # Each refusal leaves a line with its reason.
    assert re.search(r"refused POST /v1/messages \(\w+\): 401 authentication_error: this sidecar needs its local token", text)
    assert re.search(r"refused request \w+ \(claude-x-1\): 429 rate_limit_error: ", text)
    assert re.search(r"refused POST /v1/messages \(\w+\): 403 permission_error: requests from a web browser", text)
    assert re.search(r"refused request \w+ \(claude-denied-1\): 400 invalid_request_error: the model 'claude-denied-1' is not allowed", text)


def test_redactor_masks_values_and_detector_matches_at_any_level(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from sidecar.observability.logs import RedactingFormatter, UTCFormatter

    r = redactor_for(GuardrailsConfig(), ["local-token-value-123"])
    fmt = RedactingFormatter(UTCFormatter("%(levelname)s %(message)s"), r)
    try:
        raise ValueError(f"boom {AWS_KEY_ID}")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.DEBUG, __file__, 1, "k=%s t=%s pem=%s", (PROVIDER_KEY, "local-token-value-123", PRIVATE_KEY), sys.exc_info())
    line = fmt.format(rec)
    for secret in (PROVIDER_KEY, "local-token-value-123", AWS_KEY_ID, *_PEM_LINES):
        assert secret not in line
    assert line.count(MASK) >= 4 and "boom" in line
    assert rec.args is not None and rec.args[0] == PROVIDER_KEY  # the record itself is untouched for other handlers
    assert Redactor()("nothing secret here") == "nothing secret here"


def test_guardrail_matched_text_is_masked_as_the_config_turns_it_on() -> None:
    from sidecar.policy.config import CustomGuardrail

    line = "ticket ACME-123456 from ada.lovelace@corp-mail.io"
    assert redactor_for(GuardrailsConfig())(line) == line  # personal data and custom rules are off by default
    cfg = GuardrailsConfig(pii="warn", custom=(CustomGuardrail("tickets", "ACME-[0-9]{6}", "redact"),))
    out = redactor_for(cfg)(line)
    assert "ACME-123456" not in out and "ada.lovelace@corp-mail.io" not in out and out.count(MASK) == 2
