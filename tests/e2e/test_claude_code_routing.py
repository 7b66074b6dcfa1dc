"""Claude Code end to end through a route whose primary is overloaded: the fallback answers
and Claude Code never sees the outage (one request from its point of view)."""

from __future__ import annotations

from sidecar.testing.fake_anthropic import Error, FakeAnthropic, Text
from tests.e2e.helpers import (
    Setup,
    claude_result,
    is_messages_post,
    run_claude,
    settled_ledger_rows,
    start_sidecar,
)


async def test_primary_answering_529_is_absorbed_by_the_fallback(setup: Setup) -> None:
    s = setup
    s.fake.default = Error(529, message="Overloaded")
    async with FakeAnthropic(default=Text("Hello from the fallback.")) as fallback:
        (s.sidecar_home / "config.toml").write_text(
            f'[[providers]]\nname = "primary"\ntype = "anthropic"\nbase_url = "{s.fake.url}"\n\n'
            f'[[providers]]\nname = "fallback"\ntype = "anthropic"\nbase_url = "{fallback.url}"\n\n'
            '[[routes]]\nname = "main"\nmatch = { model = "*" }\n'
            'targets = [{ provider = "primary" }]\nfallbacks = [{ provider = "fallback" }]\n'
        )
        cc_env = await start_sidecar(s)
        done = await run_claude(s, cc_env, "Say hello.")

        assert done.rc == 0, done.describe()
        result = claude_result(done)
        assert result["is_error"] is False and result["result"] == "Hello from the fallback.", result
        # Claude Code sent exactly one request; the sidecar tried the primary once, then the fallback.
        sent = [r for r in fallback.requests if is_messages_post(r)]
        assert len(sent) == 1, [r.path for r in fallback.requests]
        assert len([r for r in s.fake.requests if is_messages_post(r)]) == 1
        (row,) = await settled_ledger_rows(s.db_file, 1)
        assert (row["route"], row["provider"], row["attempts"], row["fallback"], row["status"]) == (
            "main", "fallback", 2, "fallback#0", 200,
        ), row
