"""The semantic tier through a real sidecar with the packaged all-MiniLM-L6-v2.

The model is loaded once per process (the first test here pays the import); each sidecar's
embedder then becomes ready at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import sqlite_utils

from sidecar.cache.control import CACHE
from sidecar.cache.stage import CacheStage
from sidecar.testing.fake_anthropic import FakeAnthropic, Text, ToolUse
from sidecar.testing.harness import InProcessSidecar
from tests.sidecar.cache.conftest import cached_sidecar, ledger_rows, post, request

# A generous deadline: these tests are about what matches, on a machine that may be busy.
SEMANTIC = 'mode = "semantic"\nreask_window_seconds = 0\nembed_timeout_ms = 30000\n'
QUESTION = "What does the function parse_date in utils.py do?"
PARAPHRASE = "Can you tell me what the function parse_date in utils.py does?"


@asynccontextmanager
async def semantic_sidecar(fake: FakeAnthropic, home: Path, cache: str = SEMANTIC) -> AsyncIterator[InProcessSidecar]:
    async with cached_sidecar(fake, home, cache) as sc:
        stage = sc.app[CACHE]
        assert stage.embedder is not None
        assert await stage.embedder.ready(), stage.embedder.error
        yield sc


def cache(sc: InProcessSidecar) -> CacheStage:
    return sc.app[CACHE]


async def ask(client: aiohttp.ClientSession, sc: InProcessSidecar, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Send `body`, wait until its answer is stored and indexed; return the cache outcome and message."""
    status, h, raw = await post(client, sc, body)
    assert status == 200, raw
    await cache(sc).settled()
    return h["x-sidecar-cache"], msgspec.json.decode(raw)


async def test_a_paraphrase_in_the_same_conversation_is_served(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.script(Text("It parses an ISO 8601 string into a datetime."))
    async with semantic_sidecar(fake, hermetic_env) as sc:
        outcome, _ = await ask(client, sc, request(QUESTION))
        assert outcome == "miss"
        assert len(cache(sc).index) == 1
        _, h, raw = await post(client, sc, request(PARAPHRASE, stream=True))
        assert h["x-sidecar-cache"] == "hit-semantic"
        assert float(h["x-sidecar-cache-similarity"]) >= 0.95
        assert b"It parses an ISO 8601 string into a datetime." in raw
        assert len(fake.requests) == 1
        rows = await ledger_rows(sc)
        assert [r["cache_outcome"] for r in rows] == ["miss", "hit-semantic"]
        assert rows[1]["saved_usd"] == rows[0]["cost_usd"] > 0
        stats = await cache(sc).stats()
        assert stats["hits_semantic"] == 1 and stats["embedder"] == "ready" and stats["indexed"] == 1


async def test_a_paraphrase_in_another_conversation_is_a_miss(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    earlier = [{"role": "user", "content": "We are working on the billing service."}, {"role": "assistant", "content": "OK."}]
    async with semantic_sidecar(fake, hermetic_env) as sc:
        await ask(client, sc, request(QUESTION))
        outcome, _ = await ask(client, sc, request(messages=[*earlier, {"role": "user", "content": PARAPHRASE}]))
        assert outcome == "miss"
        outcome, _ = await ask(client, sc, request(PARAPHRASE, system="You are a different assistant."))
        assert outcome == "miss"
        outcome, _ = await ask(client, sc, request(PARAPHRASE, max_tokens=2048))
        assert outcome == "miss"
        assert len(fake.requests) == 4
        # Each of those is now stored in its own conversation, and is found there.
        outcome, _ = await ask(client, sc, request(messages=[*earlier, {"role": "user", "content": QUESTION}]))
        assert outcome == "hit-semantic"


async def test_guards_refuse_near_identical_prompts_that_differ_where_it_matters(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    async with semantic_sidecar(fake, hermetic_env) as sc:
        await ask(client, sc, request("Migrate this module from pandas to polars for speed"))
        await ask(client, sc, request("Add a retry with 3 attempts to fetch_user in api.py"))
        for other in ("Migrate this module from polars to pandas for speed", "Add a retry with 5 attempts to fetch_user in api.py"):
            outcome, _ = await ask(client, sc, request(other))
            assert outcome == "miss"
        assert len(fake.requests) == 4


async def test_short_follow_ups_never_match(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with semantic_sidecar(fake, hermetic_env) as sc:
        await ask(client, sc, request("yes, go ahead"))
        outcome, _ = await ask(client, sc, request("yes go ahead"))
        assert outcome == "miss"
        assert len(cache(sc).index) == 0


async def test_thinking_is_never_replayed_to_a_paraphrase(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.script(Text("It parses dates.", thinking="The user asks about parse_date."))
    async with semantic_sidecar(fake, hermetic_env) as sc:
        await ask(client, sc, request(QUESTION))
        outcome, exact = await ask(client, sc, request(QUESTION))
        assert outcome == "hit-exact"
        assert [b["type"] for b in exact["content"]] == ["thinking", "text"]  # the same context: a valid sample
        outcome, para = await ask(client, sc, request(PARAPHRASE))
        assert outcome == "hit-semantic"
        assert [b["type"] for b in para["content"]] == ["text"]


async def test_only_read_only_tool_calls_are_served_to_a_paraphrase(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.script(
        ToolUse(name="Bash", input={"command": "rm -rf build"}),
        Text("Removed."),
        ToolUse(name="Read", input={"file_path": "/repo/utils.py"}),
    )
    async with semantic_sidecar(fake, hermetic_env) as sc:
        await ask(client, sc, request("Delete the build directory of this project now"))
        outcome, _ = await ask(client, sc, request("Remove the build directory of this project now"))
        assert outcome == "miss"
        await ask(client, sc, request(QUESTION))
        outcome, msg = await ask(client, sc, request(PARAPHRASE))
        assert outcome == "hit-semantic"
        assert msg["content"][0]["name"] == "Read" and msg["content"][0]["id"].startswith("toolu_")


async def test_shadow_mode_records_would_be_hits_without_serving_them(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.script(Text("It parses an ISO 8601 string."), Text("It parses an ISO 8601 string into a datetime."))
    async with semantic_sidecar(fake, hermetic_env, SEMANTIC.replace("semantic", "shadow")) as sc:
        await ask(client, sc, request(QUESTION))
        outcome, msg = await ask(client, sc, request(PARAPHRASE))
        assert outcome == "miss"
        assert msg["content"][0]["text"] == "It parses an ISO 8601 string into a datetime."
        assert len(fake.requests) == 2
        rows = await ledger_rows(sc)
        assert [r["cache_outcome"] for r in rows] == ["miss", "shadow-hit"]
        assert rows[1]["saved_usd"] == 0
        stats = await cache(sc).stats()
        assert stats["shadow_would_hit"] == 1 and stats["hits_semantic"] == 0
        outcome, _ = await ask(client, sc, request(QUESTION))
        assert outcome == "hit-exact"  # the exact tier serves in shadow mode
    db = sqlite_utils.Database(sc.paths.db_file)
    try:
        [shadow] = list(db.query("select * from cache_shadow"))
    finally:
        db.conn.close()
    assert shadow["query"] == PARAPHRASE and shadow["candidate_query"] == QUESTION
    assert shadow["similarity"] >= 0.95 and 0.5 < shadow["agreement"] < 1


async def test_a_busy_embedder_skips_the_lookup_instead_of_slowing_the_request(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    async with semantic_sidecar(fake, hermetic_env, 'mode = "semantic"\nreask_window_seconds = 0\nembed_timeout_ms = 0.001\n') as sc:
        await ask(client, sc, request(QUESTION))
        assert len(cache(sc).index) == 1  # storing has no deadline
        outcome, _ = await ask(client, sc, request(PARAPHRASE))
        assert outcome == "miss"
        assert (await cache(sc).stats())["semantic_skipped"] == 1
        # The late embedding of the skipped lookup was not wasted: the new entry is indexed.
        assert len(cache(sc).index) == 2


async def test_prompts_the_model_would_truncate_never_match(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    long = "Review this list and tell me which names are duplicates: " + ", ".join(f"name{i}" for i in range(300))
    async with semantic_sidecar(fake, hermetic_env) as sc:
        await ask(client, sc, request(long))
        outcome, _ = await ask(client, sc, request(long.replace("Review", "Check")))
        assert outcome == "miss"
        assert len(cache(sc).index) == 0
