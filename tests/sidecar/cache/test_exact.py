"""The exact tier through a real sidecar: hits for both kinds of client, what is never
stored, the per-request controls, expiry, the re-ask window and the size cap."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import aiohttp
import anthropic
import msgspec
import pytest
from click.testing import CliRunner

from sidecar.cache.control import CACHE
from sidecar.cache.replay import MessageCollector
from sidecar.cli import cli
from sidecar.protocol.sse import iter_events
from sidecar.testing.audit import audit_entries
from sidecar.testing.fake_anthropic import Cut, Error, FakeAnthropic, StreamError, Text, ToolUse
from tests.sidecar.cache.conftest import HEADERS, cached_sidecar, ledger_rows, post, request

ANSWER = Text("parse_date turns an ISO 8601 string into a timezone-aware datetime.")


def collect(raw: bytes) -> MessageCollector:
    col = MessageCollector()
    for ev in iter_events(raw):
        col.on_event(ev.event, ev.json())
    col.on_end(True)
    return col


async def test_one_entry_serves_streaming_and_non_streaming_clients(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.script(ANSWER)
    async with cached_sidecar(fake, hermetic_env) as sc:
        status, h, first = await post(client, sc, request(stream=True))
        assert status == 200 and h["x-sidecar-cache"] == "miss"
        original = collect(first).message
        assert original is not None

        status, h, body = await post(client, sc, request())  # non-streaming, same question
        assert status == 200 and h["x-sidecar-cache"] == "hit-exact"
        msg = msgspec.json.decode(body)
        assert msg["content"] == original["content"] and msg["stop_reason"] == "end_turn"
        assert msg["id"] != original["id"] and msg["id"].startswith("msg_")
        assert msg["usage"]["input_tokens"] == 0 and msg["usage"]["output_tokens"] == 0

        status, h, raw = await post(client, sc, request(stream=True))
        assert h["x-sidecar-cache"] == "hit-exact" and h["content-type"].startswith("text/event-stream")
        replayed = collect(raw)
        assert replayed.complete and replayed.message is not None
        assert replayed.message["content"] == original["content"]
        assert len(fake.requests) == 1

        rows = await ledger_rows(sc)
        assert [r["cache_outcome"] for r in rows] == ["miss", "hit-exact", "hit-exact"]
        cost = rows[0]["cost_usd"]
        assert cost > 0
        for hit in rows[1:]:
            assert hit["saved_usd"] == pytest.approx(cost)
            assert hit["cost_usd"] == 0 and hit["input_tokens"] == 0 and hit["output_tokens"] == 0
            assert hit["provider"] == "cache" and hit["status"] == 200

        stats = await sc.app[CACHE].stats()
        assert stats["hits_exact"] == 2 and stats["misses"] == 1 and stats["lookups"] == 3
        assert stats["usd_saved"] == pytest.approx(2 * cost) and stats["tokens_saved"] > 0


async def test_the_sdk_stream_helper_accepts_a_replay(fake: FakeAnthropic, hermetic_env: Path) -> None:
    fake.script(ToolUse(name="Read", input={"file_path": "/repo/utils.py"}, text="Let me read it."))
    async with cached_sidecar(fake, hermetic_env) as sc:
        sdk = anthropic.AsyncAnthropic(base_url=sc.url, api_key="sk-ant-test", max_retries=0)
        try:
            body = request()
            kwargs = {k: body[k] for k in ("model", "max_tokens", "system", "tools", "messages")}
            first = await sdk.messages.create(**kwargs)
            async with sdk.messages.stream(**kwargs) as stream:
                texts = [t async for t in stream.text_stream]
                final = await stream.get_final_message()
        finally:
            await sdk.close()
    assert len(fake.requests) == 1
    assert "".join(texts) == "Let me read it."
    assert final.stop_reason == "tool_use"
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.name == "Read" and tool.input == {"file_path": "/repo/utils.py"}
    assert tool.id != first.content[1].id  # type: ignore[union-attr]
    assert final.id != first.id


@pytest.mark.parametrize(
    "failure",
    [
        Cut(after_events=4),  # reset mid-stream
        Cut(after_events=5, clean_end=True),  # a clean end without message_stop
        StreamError(after_events=3),  # an in-stream error event
        Error(400, message="prompt is too long"),
        Text("cut short", stop_reason="max_tokens"),
    ],
)
async def test_partial_errored_and_truncated_answers_are_never_stored(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession, failure: object
) -> None:
    fake.script(failure, ANSWER, ANSWER)  # type: ignore[arg-type]
    async with cached_sidecar(fake, hermetic_env) as sc:
        try:
            await post(client, sc, request(stream=True))
        except aiohttp.ClientError:
            pass  # the sidecar resets a client whose upstream broke mid-stream
        _, h, _ = await post(client, sc, request(stream=True))
        assert h["x-sidecar-cache"] == "miss"
        assert len(fake.requests) == 2
        _, h, _ = await post(client, sc, request(stream=True))
        assert h["x-sidecar-cache"] == "hit-exact"
        assert (await sc.app[CACHE].stats())["stored"] == 1


async def test_any_change_that_shapes_the_answer_is_a_miss(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    async with cached_sidecar(fake, hermetic_env) as sc:
        variants = [
            request(),
            request(temperature=0.2),
            request(tools=[]),
            request(system="You are terse."),
            request(model="claude-sonnet-5"),
            request(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                              {"role": "user", "content": "What does the function parse_date in utils.py do?"}]),
        ]  # fmt: skip
        for body in variants:
            _, h, _ = await post(client, sc, body)
            assert h["x-sidecar-cache"] == "miss"
        _, h, _ = await post(client, sc, request(), x_api_key="sk-ant-someone-else")
        assert h["x-sidecar-cache"] == "miss"  # another credential never sees these answers
        assert len(fake.requests) == len(variants) + 1
        for body in variants:
            _, h, _ = await post(client, sc, {**body, "metadata": {"user_id": "x"}, "stream": True})
            assert h["x-sidecar-cache"] == "hit-exact"


async def test_count_tokens_is_never_cached(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with cached_sidecar(fake, hermetic_env) as sc:
        for _ in range(2):
            async with client.post(sc.url + "/v1/messages/count_tokens", json=request(), headers=HEADERS) as resp:
                assert resp.status == 200 and "x-sidecar-cache" not in resp.headers
        assert len(fake.requests) == 2


async def test_per_request_controls(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with cached_sidecar(fake, hermetic_env) as sc:
        _, h, _ = await post(client, sc, request(), cache_control="no-store")
        assert h["x-sidecar-cache"] == "miss"
        _, h, _ = await post(client, sc, request(), x_sidecar_cache="off")
        assert h["x-sidecar-cache"] == "bypass"
        _, h, _ = await post(client, sc, request())
        assert h["x-sidecar-cache"] == "miss"  # neither of the two above was stored
        _, h, _ = await post(client, sc, request(), x_sidecar_cache="exact")
        assert h["x-sidecar-cache"] == "hit-exact"
        _, h, _ = await post(client, sc, request(), x_sidecar_cache="off")
        assert h["x-sidecar-cache"] == "bypass"  # off: not looked up either
        _, h, _ = await post(client, sc, request(), cache_control="no-store")
        assert h["x-sidecar-cache"] == "hit-exact"  # no-store still reads
        fake.script(Text("A newer answer."))
        _, h, _ = await post(client, sc, request(), cache_control="no-cache")
        assert h["x-sidecar-cache"] == "bypass"  # no-cache asks upstream ...
        _, h, body = await post(client, sc, request())
        assert h["x-sidecar-cache"] == "hit-exact"  # ... and stores the new answer
        assert msgspec.json.decode(body)["content"][0]["text"] == "A newer answer."
        assert len(fake.requests) == 5

        status, _, body = await post(client, sc, request(), x_sidecar_cache="sometimes")
        assert status == 400
        err = msgspec.json.decode(body)["error"]
        assert err["type"] == "invalid_request_error" and "x-sidecar-cache" in err["message"]
        assert len(fake.requests) == 5


async def test_asking_again_soon_gets_a_new_answer(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    fake.script(Text("first"), Text("second"), Text("third"))
    async with cached_sidecar(fake, hermetic_env, "reask_window_seconds = 3600\n") as sc:
        texts = []
        for _ in range(3):
            _, h, body = await post(client, sc, request())
            texts.append((h["x-sidecar-cache"], msgspec.json.decode(body)["content"][0]["text"]))
    assert texts == [("miss", "first"), ("bypass", "second"), ("bypass", "third")]
    rows = await ledger_rows(sc)
    assert [r["cache_outcome"] for r in rows] == ["miss", "bypass", "bypass"]


async def test_expired_answers_are_not_served(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with cached_sidecar(fake, hermetic_env, "reask_window_seconds = 0\nttl_seconds = 0.05\n") as sc:
        await post(client, sc, request())
        await asyncio.sleep(0.2)
        _, h, _ = await post(client, sc, request())
        assert h["x-sidecar-cache"] == "miss"
        assert len(fake.requests) == 2


async def test_the_size_cap_evicts_the_least_recently_used(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.default = Text("word " * 400)  # about 2 KB per stored answer
    async with cached_sidecar(fake, hermetic_env, "reask_window_seconds = 0\nmax_mb = 0.006\n") as sc:
        for i in range(5):
            await post(client, sc, request(f"Question number {i} about parse_date in utils.py"))
        await sc.app[CACHE].settled()
        stats = await sc.app[CACHE].stats()
        assert stats["bytes"] <= 0.006 * 1024 * 1024 and stats["entries"] < 5
        _, h, _ = await post(client, sc, request("Question number 4 about parse_date in utils.py"))
        assert h["x-sidecar-cache"] == "hit-exact"
        _, h, _ = await post(client, sc, request("Question number 0 about parse_date in utils.py"))
        assert h["x-sidecar-cache"] == "miss"
        assert (await sc.app[CACHE].stats())["evicted"] >= 1


async def test_answers_survive_a_restart_and_the_control_api_clears_them(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    async with cached_sidecar(fake, hermetic_env) as sc:
        await post(client, sc, request())
        await post(client, sc, request())
    async with cached_sidecar(fake, hermetic_env) as sc:
        auth = {"Authorization": f"Bearer {sc.token}"}
        _, h, _ = await post(client, sc, request())
        assert h["x-sidecar-cache"] == "hit-exact"
        async with client.get(sc.url + "/sidecar/v1/cache", headers=auth) as resp:
            stats = await resp.json()
        assert stats["mode"] == "exact" and stats["entries"] == 1
        assert stats["hits_exact"] == 2 and stats["misses"] == 1 and stats["hit_rate"] == pytest.approx(2 / 3, abs=1e-3)
        assert stats["usd_saved"] > 0
        async with client.post(sc.url + "/sidecar/v1/cache/clear", headers=auth) as resp:
            assert await resp.json() == {"cleared": 1}
        _, h, _ = await post(client, sc, request())
        assert h["x-sidecar-cache"] == "miss"
    assert len(fake.requests) == 2


async def test_mode_off(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with cached_sidecar(fake, hermetic_env, 'mode = "off"\n') as sc:
        for _ in range(2):
            _, h, _ = await post(client, sc, request())
            assert h["x-sidecar-cache"] == "bypass"
        async with client.get(sc.url + "/sidecar/v1/cache", headers={"Authorization": f"Bearer {sc.token}"}) as resp:
            stats = await resp.json()
    assert stats == {"mode": "off"}
    assert len(fake.requests) == 2
    config = hermetic_env / "off.toml"
    config.write_text('[cache]\nmode = "off"\n')
    shown = CliRunner().invoke(cli, ["cache", "--config", str(config), "stats"])
    assert shown.exit_code == 0 and "the cache is off" in shown.output
    as_json = CliRunner().invoke(cli, ["cache", "--config", str(config), "stats", "--json"])
    assert json.loads(as_json.output) == {"mode": "off"}


def dated(day: str, text: str = "Summarise the open pull requests in this repository") -> dict[str, object]:
    reminder = f"<system-reminder>\n# currentDate\nToday's date is {day}.\n</system-reminder>"
    return request(messages=[{"role": "user", "content": [{"type": "text", "text": reminder}, {"type": "text", "text": text}]}])


async def test_an_answer_that_mentions_the_date_is_not_served_on_another_day(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.script(Text("There are two open pull requests."), Text("As of today, Friday, there are two."), Text("Two."))
    async with cached_sidecar(fake, hermetic_env) as sc:
        await post(client, sc, dated("2026-11-27"))
        _, h, _ = await post(client, sc, dated("2026-11-28"))
        assert h["x-sidecar-cache"] == "hit-exact"  # the date is normalised; the answer does not depend on it

        await post(client, sc, dated("2026-11-27", "What day is it and what is open?"))
        _, h, body = await post(client, sc, dated("2026-11-28", "What day is it and what is open?"))
        assert h["x-sidecar-cache"] == "miss"
        assert msgspec.json.decode(body)["content"][0]["text"] == "Two."
        _, h, _ = await post(client, sc, dated("2026-11-28", "What day is it and what is open?"))
        assert h["x-sidecar-cache"] == "hit-exact"  # made on the same day: served


async def test_a_full_store_queue_is_audited_and_every_reserved_place_is_used_or_given_back(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    """An answer is stored after it went out, in a place reserved while the request was
    completed: when the store queue is full, the request's audit entry says why its answer
    was not stored, and no place stays reserved once the requests are over."""
    fake.default = Text("an answer")
    async with cached_sidecar(fake, hermetic_env) as sc:
        cache = sc.app[CACHE]
        sink = cache.entries._sink
        sink.limit = 2
        gate = threading.Event()
        blocked = cache.entries.write(gate.wait)  # the database thread is busy: stores wait
        ids = []
        try:
            for i in range(4):
                status, h, _ = await post(client, sc, request(f"Question number {i} about parse_date in utils.py"))
                assert status == 200 and h["x-sidecar-cache"] == "miss"
                ids.append(h["x-sidecar-request-id"])
            assert sink.reserved == 0 and sink.pending == 2 and sink.shed == 2
        finally:
            gate.set()
        await asyncio.wrap_future(blocked)
        await cache.settled()
        assert sink.reserved == 0 and not cache._storing
        stats = await cache.stats()
        assert stats["entries"] == 2 and stats["shed"] == 2
        _, h, _ = await post(client, sc, request("Question number 1 about parse_date in utils.py"))
        assert h["x-sidecar-cache"] == "hit-exact"
        _, h, _ = await post(client, sc, request("Question number 2 about parse_date in utils.py"))
        assert h["x-sidecar-cache"] == "miss"
    shed = "too many answers are waiting to be stored"
    by_id = {e["request_id"]: e for e in audit_entries(hermetic_env) if e["kind"] == "request"}
    reasons = [[d["reason"] for d in by_id[i]["decisions"] if d["stage"] == "cache"] for i in ids]
    assert [shed in r for r in reasons] == [False, False, True, True]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"claude-opus-4-8","max_tokens":5,"messages":[{"role":"user","content":"\xff"}]}',
        b'{"model":"claude-opus-4-8","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"a\xc3"}]}]}',
        b'{"model":"claude-opus-4-8","max_tokens":5,"system":"\xff\xfe","messages":[{"role":"user","content":"hi"}]}',
        b'{"model":"claude-opus-4-8","max_tokens":5,"tools":[{"name":"\xed\xa0\x80"}],"messages":[{"role":"user","content":"hi"}]}',
        b'{"model":"claude-opus-4-8","max_tokens":5,"x-new":{"\xff":1},"messages":[{"role":"user","content":"hi"}]}',
    ],
)
async def test_a_body_that_is_not_utf8_anywhere_is_refused_not_crashed_on(
    raw: bytes, fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    """JSON is UTF-8: bytes that are not, in any field the cache reads to key the request (the
    head's scan skips what it does not read), get a 400 in the Anthropic envelope, never a 500."""
    async with cached_sidecar(fake, hermetic_env) as sc:
        async with client.post(sc.url + "/v1/messages", data=raw, headers=HEADERS) as resp:
            assert resp.status == 400, await resp.text()
            err = (await resp.json())["error"]
            assert err["type"] == "invalid_request_error" and "not valid JSON" in err["message"]
    assert fake.requests == []
