"""The central policy stays on top of the local file: applied at once (routes, providers,
governance) through the Reloader, and laid again over every reload of the local file, so
editing it cannot lift an org limit; a policy that cannot be applied changes nothing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.errors import ConfigError
from sidecar.policy.control import POLICY
from sidecar.sync.merge import CentralOverlay
from sidecar.sync.policy import CentralPolicy
from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import anthropic_config
from sidecar.testing.live import BODY, PRICES, Live, live_sidecar


def central(doc: dict[str, Any], version: int) -> CentralPolicy:
    return CentralPolicy(version, 1.0, doc, {}, 1.0)


async def ask(client: aiohttp.ClientSession, sc: Live, model: str = "claude-opus-4-8") -> tuple[int, str]:
    async with client.post(sc.url + "/v1/messages", json={**BODY, "model": model}, headers={"x-api-key": "k"}) as resp:
        data = await resp.json()
        return resp.status, data["error"]["message"] if resp.status != 200 else data["model"]


async def test_a_local_reload_keeps_the_central_policy_on_top(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(Text(usage={"input_tokens": 10, "output_tokens": 10}))
    base = anthropic_config(fake.url, PRICES)
    async with FakeAnthropic() as corp, live_sidecar(hermetic_env, base + "[budget]\ndaily_usd = 10.0\n") as sc:
        corp.script(Text(usage={"input_tokens": 10, "output_tokens": 10}))
        hook = CentralOverlay()
        sc.reloader.overlay = hook
        gate = sc.app[POLICY]
        org = central({
            "budget": {"daily_usd": 0.001},
            "policy": {"deny_models": ["claude-haiku-*"]},
            "providers": [{"name": "corp", "type": "anthropic", "base_url": corp.url}],
            "routes": [{"name": "all", "targets": [{"provider": "corp"}]}],
        }, 5)  # fmt: skip
        hook.install(org, lambda: sc.reloader.apply_now("central policy v5"))
        assert gate.policy.version == 5 and gate.budgets.windows[0].limit == 0.001
        assert set(sc.reloader.providers) == {"corp"}  # the org's providers replace the local ones
        denied = await ask(client, sc, "claude-haiku-4-5")
        # The developer raises the budget and drops the deny list in the local file: the org's stay.
        sc.file.write_text(base + "[budget]\ndaily_usd = 100.0\nweekly_usd = 50.0\n[policy]\nmodels = []\n")
        with caplog.at_level(logging.INFO, logger="sidecar"):
            assert await sc.reloader.reload("test")
        limits = {w.period: w.limit for w in gate.budgets.windows}
        denied_after = await ask(client, sc, "claude-haiku-4-5")
        # A policy whose routes name no provider is refused whole: nothing changes.
        with pytest.raises(ConfigError, match="central v6"):
            hook.install(central({"budget": {"daily_usd": 1}, "routes": [{"name": "x", "targets": [{"provider": "gone"}]}]}, 6),
                         lambda: sc.reloader.apply_now("central policy v6"))  # fmt: skip
        kept = (hook.central, gate.policy.version, gate.budgets.windows[0].limit)
        # Unenrolled: the local file alone again.
        hook.install(None, lambda: sc.reloader.apply_now("central policy removed"))
        local_again = {w.period: w.limit for w in gate.budgets.windows}
        assert set(sc.reloader.providers) == {"anthropic"}
        served = await ask(client, sc)
    assert denied[0] == 400 and "not allowed by the policy" in denied[1]
    assert limits == {"day": 0.001, "week": 50.0}  # the org's day, the local week (the org sets none)
    assert denied_after[0] == 400
    assert kept == (org, 5, 0.001)
    assert local_again == {"day": 100.0, "week": 50.0} and gate.policy.version == 0
    assert served[0] == 200 and len(fake.requests) == 1 and len(corp.requests) == 0  # org routes gone with the org
