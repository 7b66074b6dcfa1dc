"""A config reload applies the governance sections at once (budget, limits, guardrails,
tools, policy: through the policy gate's apply_policy), and says plainly (a warning naming
the section, a `config_restart_needed` event) when a change needs a restart, instead of
logging "reloaded" while ignoring it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.cache.control import CACHE
from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import anthropic_config
from sidecar.testing.live import BODY, PRICES, Live, live_sidecar


async def budgets(client: aiohttp.ClientSession, sc: Live) -> list[dict[str, Any]]:
    async with client.get(sc.url + "/sidecar/v1/policy", headers={"authorization": f"Bearer {sc.token}"}) as resp:
        data: dict[str, Any] = await resp.json()
        return list(data.get("budgets", []))


def restart_events(sc: Live) -> list[dict[str, Any]]:
    """The `config_restart_needed` events published so far."""
    events = [sc.events.get_nowait() for _ in range(sc.events.qsize())]
    return [e for e in events if e["type"] == "config_restart_needed"]


async def test_a_new_budget_limit_applies_at_once_and_keeps_the_spend(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(Text(usage={"input_tokens": 100_000, "output_tokens": 10}))  # $0.50
    base = anthropic_config(fake.url, PRICES)
    async with live_sidecar(hermetic_env, base + "[budget]\ndaily_usd = 1.0\nweekly_usd = 3.0\n") as sc:
        async with client.post(sc.url + "/v1/messages", json=BODY, headers={"x-api-key": "k"}) as resp:
            assert resp.status == 200
        # $1.00 a day leaves no room for another 2,000-token request at $0.05 + $0.50 of input...
        sc.file.write_text(base + "[budget]\ndaily_usd = 0.5\n")  # ... and a lower one none at all
        with caplog.at_level(logging.INFO, logger="sidecar"):
            assert await sc.reloader.reload("test")
        [day] = await budgets(client, sc)
        async with client.post(sc.url + "/v1/messages", json=BODY, headers={"x-api-key": "k"}) as resp:
            refused = resp.status, (await resp.json())["error"]["message"]
    assert (day["period"], day["limit_usd"], day["spent_usd"]) == ("day", 0.5, pytest.approx(0.50025))
    assert refused[0] == 429 and "the daily budget of $0.50 is used up" in refused[1]
    assert "[budget] applied" in caplog.text and "restart" not in caplog.text
    assert restart_events(sc) == []


@pytest.mark.parametrize(
    ("section", "before", "after", "refused"),
    [
        ("limits", "[limits]\nrequests_per_minute = 100\n", "[limits]\nrequests_per_minute = 1\n", "requests_per_minute = 1"),
        ("guardrails", "", '[guardrails]\nsecrets = "block"\n', "guardrail policy blocks"),
        ("policy", "", '[policy]\nmodels = ["claude-haiku-*"]\n', "not allowed by the policy"),
        ("budget", "[budget]\ndaily_usd = 10.0\n", "[budget]\ndaily_usd = 10.0\nmonthly_usd = 0.5\n", "monthly budget"),  # a new period
    ],
)
async def test_a_governance_change_applies_at_once(
    section: str, before: str, after: str, refused: str, fake: FakeAnthropic, hermetic_env: Path,
    client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    fake.script(Text(usage={"input_tokens": 100_000, "output_tokens": 10}))  # $0.50
    base = anthropic_config(fake.url, PRICES)
    leaked = {**BODY, "messages": [{"role": "user", "content": "key AKIAQ3EGRTLMZN4XW7PB"}]}
    async with live_sidecar(hermetic_env, base + before) as sc:
        async with client.post(sc.url + "/v1/messages", json=BODY, headers={"x-api-key": "k"}) as resp:
            assert resp.status == 200
        sc.file.write_text(base + after)
        with caplog.at_level(logging.INFO, logger="sidecar"):
            assert await sc.reloader.reload("test")
        async with client.post(sc.url + "/v1/messages", json=leaked, headers={"x-api-key": "k"}) as resp:
            status, message = resp.status, (await resp.json())["error"]["message"]
        needed = restart_events(sc)
    assert status in (400, 429) and refused in message
    assert f"[{section}] applied" in caplog.text and needed == []


@pytest.mark.parametrize(
    ("section", "before", "after"),
    [
        ("cache", '[cache]\nmode = "exact"\n', '[cache]\nmode = "off"\n'),
        ("usage", "", '[usage]\ntimezone = "Asia/Tokyo"\n'),
    ],
)
async def test_a_change_that_needs_a_restart_is_announced_and_the_running_values_stay(
    section: str, before: str, after: str, fake: FakeAnthropic, hermetic_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = anthropic_config(fake.url, PRICES)
    async with live_sidecar(hermetic_env, base + before) as sc:
        mode = sc.app[CACHE].cfg.mode
        sc.file.write_text(base + after)
        with caplog.at_level(logging.INFO, logger="sidecar"):
            assert await sc.reloader.reload("test")
            assert await sc.reloader.reload("again")  # still not in force: said again
        needed = restart_events(sc)
        assert sc.app[CACHE].cfg.mode == mode
    assert [e["data"] for e in needed] == [{"reason": "test", "sections": [section]}, {"reason": "again", "sections": [section]}]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"[{section}] changed" in w and "after a restart" in w for w in warnings), warnings
