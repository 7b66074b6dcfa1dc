"""As spend fills a real sidecar's day budget, the running tray icon turns from green to
amber to red, its title says how full the budget is, and each threshold crossed is
announced (logged, on xorg, which has no notifications)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp

from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.harness import anthropic_config, start_child
from tests.tray.conftest import eventually, post_message, shows
from tests.tray.x11 import SystemTray
from tray.state import Budget, TrayState

BUDGET = "\n[budget]\ndaily_usd = 5\nthresholds = [0.8, 0.95]\n"


def cost(usd: float) -> dict[str, int]:
    """Token counts that Opus 4.8 ($5/M input, $25/M output) prices at `usd`."""
    return {"input_tokens": round(usd / 2 / 5 * 1e6), "output_tokens": round(usd / 2 / 25 * 1e6)}


def at(spent: float) -> TrayState:
    return TrayState(
        running=True, today_usd=spent, budgets=(Budget("day", 5.0, spent, (0.8, 0.95)),)
    )


async def test_the_icon_fills_with_the_budget(
    systray: SystemTray,
    tray_process: subprocess.Popen[bytes],
    fake: FakeAnthropic,
    hermetic_env: Path,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    child = await asyncio.to_thread(start_child, hermetic_env, anthropic_config(fake.url, BUDGET))
    try:
        [icon] = await eventually(systray.icons, "the tray icon to dock")
        await shows(
            systray, icon, "claude-sidecar: $0.00 today · $0.00 this month · day budget 0%", at(0.0)
        )

        for spent, usd, title in (
            (3.0, 3.0, "claude-sidecar: $3.00 today · $3.00 this month · day budget 60%"),
            (4.25, 1.25, "claude-sidecar: $4.25 today · $4.25 this month · day budget 85%"),
            (7.25, 3.0, "claude-sidecar: $7.25 today · $7.25 this month · day budget 145% (over)"),
        ):
            fake.script(Text("hi", usage=cost(usd)))
            await post_message(client, child.url)
            await shows(systray, icon, title, at(spent))
    finally:
        assert child.stop() == 0

    log = (tmp_path / "tray.log").read_text()
    assert "85% of the day budget is spent ($4.25 of $5.00)." in log
    assert "The day budget is spent ($7.25 of $5.00); requests are refused until " in log
    assert len([line for line in log.splitlines() if line.startswith("WARNING tray.app: ")]) == 2
