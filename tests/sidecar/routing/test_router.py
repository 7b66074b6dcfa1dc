"""The router through a real sidecar and real fake upstreams: weights, fallbacks, retries,
breakers, affinity, runtime toggles and the ledger's record of what happened."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from sidecar.appkeys import ROUTER
from sidecar.testing.fake_anthropic import (
    Cut,
    Error,
    FakeAnthropic,
    StallBeforeHeaders,
    StreamError,
    Text,
)
from sidecar.testing.harness import ledger_rows
from sidecar.testing.routing import HEADERS, body, no_retry_rounds, post, route
from tests.sidecar.routing.conftest import SidecarFactory, dead_url, providers

# ------------------------------------------------------------------------- balancing


@pytest.mark.parametrize("strategy", ["weighted", "round_robin"])
async def test_weights_hold_over_2000_requests(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession, strategy: str) -> None:
    a, b, _ = fakes
    cfg = providers(fakes, "ab") + route('{ provider = "a", weight = 3 }, { provider = "b", weight = 1 }', extra=f'strategy = "{strategy}"\naffinity = false')
    async with routed(cfg) as sc:
        sem = asyncio.Semaphore(16)

        async def one() -> int:
            async with sem:
                return (await post(client, sc))[0]

        statuses = await asyncio.gather(*(one() for _ in range(2000)))
    assert set(statuses) == {200}
    n_a, n_b = len(a.requests), len(b.requests)
    assert n_a + n_b == 2000
    if strategy == "round_robin":
        assert (n_a, n_b) == (1500, 500)
    else:
        # Binomial(2000, 0.75): sd 19.4; five sd either side.
        assert 1403 <= n_a <= 1597, (n_a, n_b)


# ------------------------------------------------------------------------- fallbacks


FAILURES = [
    pytest.param(Error(529), id="529"),
    pytest.param(Error(429, headers={"retry-after": "0"}), id="429"),
    pytest.param(Error(500), id="500"),
    pytest.param(Error(503), id="503"),
    pytest.param(Error(408, type="timeout_error"), id="408"),
    pytest.param(Error(409, type="conflict_error"), id="409"),
    pytest.param(StallBeforeHeaders(seconds=3.0), id="stall-before-headers"),
]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("failure", FAILURES)
async def test_each_retryable_failure_falls_back_to_one_clean_success(
    fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession, failure: Any, stream: bool
) -> None:
    a, b, _ = fakes
    a.script(failure)
    cfg = providers(fakes, "ab") + route('{ provider = "a" }', '{ provider = "b" }', extra="timeouts = { first_byte = 0.5 }") + no_retry_rounds()
    async with routed(cfg) as sc:
        status, headers, raw = await post(client, sc, stream)
        rows = await ledger_rows(sc)
    assert status == 200
    if stream:
        assert raw.rstrip().endswith(b'data: {"type":"message_stop"}') or b"message_stop" in raw
        assert b"event: error" not in raw
    else:
        assert json.loads(raw)["content"][0]["text"]
    assert len(a.requests) == 1 and len(b.requests) == 1
    assert headers["x-sidecar-route"] == "main"
    assert headers["x-sidecar-upstream"] == "b/claude-opus-4-8"
    (row,) = rows
    assert (row["route"], row["target"], row["attempts"], row["fallback"], row["status"]) == ("main", "b#0", 2, "b#0", 200)


async def test_an_in_stream_overloaded_error_before_content_falls_back(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    a, b, _ = fakes
    a.script(StreamError(after_events=1, type="overloaded_error"))
    b.script(Text("from b"))
    cfg = providers(fakes, "ab") + route('{ provider = "a" }', '{ provider = "b" }') + no_retry_rounds()
    async with routed(cfg) as sc:
        status, headers, raw = await post(client, sc, stream=True)
    assert status == 200 and b"event: error" not in raw and b"message_stop" in raw
    assert raw.count(b"event: message_start") == 1  # the failed attempt's message_start never reached the client
    assert b"from" in raw and len(b.requests) == 1
    assert headers["x-sidecar-upstream"] == "b/claude-opus-4-8"


async def test_a_refused_connection_falls_back(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    b = fakes[1]
    cfg = f'[[providers]]\nname = "dead"\ntype = "anthropic"\nbase_url = "{dead_url()}"\n\n' + providers([b], "b")
    cfg += route('{ provider = "dead" }', '{ provider = "b" }') + no_retry_rounds()
    async with routed(cfg) as sc:
        status, headers, _ = await post(client, sc, stream=True)
    assert status == 200 and headers["x-sidecar-upstream"] == "b/claude-opus-4-8"


async def test_no_fallback_after_the_first_byte_the_client_connection_is_aborted(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    a, b, _ = fakes
    a.script(Cut(after_events=5))  # message_start, block start, deltas: content has flowed
    cfg = providers(fakes, "ab") + route('{ provider = "a" }', '{ provider = "b" }')
    async with routed(cfg) as sc:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with client.post(sc.url + "/v1/messages", data=body(True), headers=HEADERS) as r:
                assert r.status == 200
                await r.read()
        rows = await ledger_rows(sc)
    assert len(b.requests) == 0
    assert rows[0]["outcome"] == "aborted"


async def test_a_400_is_never_retried_or_fallen_back(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    a, b, _ = fakes
    a.script(Error(400, message="max_tokens: too large"))
    cfg = providers(fakes, "ab") + route('{ provider = "a" }', '{ provider = "b" }')
    async with routed(cfg) as sc:
        status, _, raw = await post(client, sc, stream=True)
    assert status == 400 and json.loads(raw)["error"]["message"] == "max_tokens: too large"
    assert (len(a.requests), len(b.requests)) == (1, 0)


async def test_when_every_target_fails_the_client_gets_the_last_upstream_error(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    a, b, _ = fakes
    a.script(Error(529))
    b.script(Error(503, message="b is down"))
    cfg = providers(fakes, "ab") + route('{ provider = "a" }', '{ provider = "b" }') + no_retry_rounds()
    async with routed(cfg) as sc:
        status, _, raw = await post(client, sc)
    assert status == 503 and json.loads(raw)["error"]["message"] == "b is down"


async def test_retry_rounds_back_off_and_honour_retry_after(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    a = fakes[0]
    a.script(Error(429, headers={"retry-after": "2"}), Error(429, headers={"retry-after": "2"}))
    cfg = providers(fakes, "a") + route('{ provider = "a" }') + "[routing.retry]\nrounds = 2\nbase_delay = 0.01\nmax_retry_after = 5\n"
    async with routed(cfg) as sc:
        slept: list[float] = []

        async def sleep(s: float) -> None:
            slept.append(s)

        sc.app[ROUTER].sleep = sleep
        status, _, _ = await post(client, sc)
    assert status == 200 and len(a.requests) == 3
    assert len(slept) == 2 and all(s >= 2.0 for s in slept)


async def test_a_retry_after_beyond_the_bound_is_passed_to_the_client_instead_of_waited_for(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    a = fakes[0]
    a.script(Error(429, headers={"retry-after": "30"}))
    cfg = providers(fakes, "a") + route('{ provider = "a" }') + "[routing.retry]\nrounds = 3\nmax_retry_after = 5\n"
    async with routed(cfg) as sc:
        status, headers, _ = await post(client, sc)
    assert status == 429 and headers["retry-after"] == "30" and len(a.requests) == 1


# ------------------------------------------------------------------------- breaker


async def test_breaker_opens_skips_the_dead_target_and_recovers_through_a_probe(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    a, b, _ = fakes
    a.script(*[Error(529)] * 3)
    cfg = providers(fakes, "ab") + route('{ provider = "a" }', '{ provider = "b" }') + no_retry_rounds()
    cfg += "[routing.breaker]\nfailures = 3\ncooldown = 0.6\n"
    events: list[tuple[str, dict[str, Any]]] = []
    async with routed(cfg) as sc:
        router = sc.app[ROUTER]
        publish = router.on_event

        def spy(kind: str, data: dict[str, Any]) -> None:
            events.append((kind, data))
            if publish is not None:
                publish(kind, data)

        router.on_event = spy
        for _ in range(3):
            assert (await post(client, sc))[0] == 200
        assert len(a.requests) == 3
        # Open: the dead target costs nothing any more.
        for _ in range(5):
            assert (await post(client, sc))[0] == 200
        assert len(a.requests) == 3 and len(b.requests) == 8
        async with client.get(sc.url + "/sidecar/v1/routes", headers={"authorization": f"Bearer {sc.token}"}) as r:
            state = await r.json()
        assert state["routes"][0]["targets"][0]["breaker"] == "open"
        await asyncio.sleep(0.7)
        # Half-open: one probe goes to a (healthy again) and closes the breaker.
        status, headers, _ = await post(client, sc)
        assert status == 200 and headers["x-sidecar-upstream"] == "a/claude-opus-4-8"
        assert (await post(client, sc))[2] and len(a.requests) == 5
    assert [e[1]["state"] for e in events if e[0] == "breaker"] == ["open", "half_open", "closed"]


async def test_when_every_breaker_is_open_the_answer_is_immediate(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    a = fakes[0]
    a.script(*[Error(529)] * 2)
    cfg = providers(fakes, "a") + route('{ provider = "a" }') + no_retry_rounds() + "[routing.breaker]\nfailures = 2\ncooldown = 60\n"
    async with routed(cfg) as sc:
        await post(client, sc)
        await post(client, sc)
        status, _, raw = await post(client, sc)
    assert status == 529 and "circuit open" in json.loads(raw)["error"]["message"]
    assert len(a.requests) == 2


# ------------------------------------------------------------------------- affinity


async def test_session_affinity_holds_and_moves_when_its_target_dies(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    cfg = providers(fakes, "abc") + route('{ provider = "a" }, { provider = "b" }, { provider = "c" }') + no_retry_rounds()
    cfg += "[routing.breaker]\nfailures = 1\ncooldown = 60\n"
    async with routed(cfg) as sc:
        served: dict[str, set[str]] = {}
        for i in range(30):
            for s in ("s1", "s2", "s3"):
                _, h, _ = await post(client, sc, headers={"x-claude-code-session-id": s})
                served.setdefault(s, set()).add(h["x-sidecar-upstream"])
                assert i >= 0
        assert all(len(v) == 1 for v in served.values()), served
        pinned = next(iter(served["s1"])).split("/")[0]
        dead = {"a": fakes[0], "b": fakes[1], "c": fakes[2]}[pinned]
        dead.script(*[Error(529)] * 50)
        moved: set[str] = set()
        for _ in range(10):
            status, h, _ = await post(client, sc, headers={"x-claude-code-session-id": "s1"})
            assert status == 200
            moved.add(h["x-sidecar-upstream"].split("/")[0])
        assert pinned not in moved and len(moved) == 1


# ------------------------------------------------------------------------- matching and control


async def test_routes_match_by_model_header_and_scenario_and_can_be_toggled_at_run_time(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    a, b, c = fakes
    cfg = providers(fakes, "abc")
    cfg += route('{ provider = "b" }', name="team-infra", match='header = { "x-team" = "infra*" }')
    cfg += route('{ provider = "c", model = "claude-haiku-4-5" }', name="haiku", match='model = "claude-haiku-*"')
    cfg += route('{ provider = "a" }', name="default")
    async with routed(cfg) as sc:
        auth = {"authorization": f"Bearer {sc.token}"}
        assert (await post(client, sc, headers={"x-team": "infra-eu"}))[1]["x-sidecar-route"] == "team-infra"
        _, h, _ = await post(client, sc, model="claude-haiku-4-5-20251001")
        assert (h["x-sidecar-route"], h["x-sidecar-upstream"]) == ("haiku", "c/claude-haiku-4-5")
        assert c.requests[-1].json()["model"] == "claude-haiku-4-5"  # the route's model went upstream
        assert (await post(client, sc))[1]["x-sidecar-route"] == "default"
        async with client.post(sc.url + "/sidecar/v1/routes/haiku/disable", headers=auth) as r:
            assert r.status == 200 and (await r.json())["enabled"] is False
        assert (await post(client, sc, model="claude-haiku-4-5-20251001"))[1]["x-sidecar-route"] == "default"
        async with client.post(sc.url + "/sidecar/v1/routes/haiku/enable", headers=auth) as r:
            assert (await r.json())["enabled"] is True
        assert (await post(client, sc, model="claude-haiku-4-5-20251001"))[1]["x-sidecar-route"] == "haiku"
        async with client.post(sc.url + "/sidecar/v1/routes/nope/disable", headers=auth) as r:
            assert r.status == 404 and "no route named 'nope'" in (await r.json())["error"]["message"]
        async with client.get(sc.url + "/v1/models", headers=HEADERS) as r:
            ids = [m["id"] for m in (await r.json())["data"]]
        assert "claude-haiku-4-5" in ids
    assert len(a.requests) == 2 and len(b.requests) == 1


async def test_explicit_provider_model_names_need_the_allow_list(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    a, b, _ = fakes
    cfg = providers(fakes, "ab") + route('{ provider = "a" }') + '[routing]\nallow_explicit = ["b/claude-sonnet-*"]\n'
    async with routed(cfg) as sc:
        status, h, _ = await post(client, sc, model="b/claude-sonnet-5")
        assert status == 200 and h["x-sidecar-upstream"] == "b/claude-sonnet-5"
        assert b.requests[-1].json()["model"] == "claude-sonnet-5"
        status, h, _ = await post(client, sc, model="b,claude-sonnet-5")
        assert status == 200 and len(b.requests) == 2
        status, _, raw = await post(client, sc, model="b/claude-opus-4-8")
        assert status == 400 and "allow_explicit" in json.loads(raw)["error"]["message"]
    assert len(a.requests) == 0


async def test_the_policy_provider_allow_list_steers_the_route(fakes: list[FakeAnthropic], routed: SidecarFactory, client: aiohttp.ClientSession) -> None:
    a, b, _ = fakes
    cfg = providers(fakes, "ab") + route('{ provider = "a" }', '{ provider = "b" }') + '[policy]\nproviders = ["b"]\n'
    async with routed(cfg) as sc:
        status, h, _ = await post(client, sc)
        assert status == 200 and h["x-sidecar-upstream"] == "b/claude-opus-4-8"
    assert (len(a.requests), len(b.requests)) == (0, 1)
    cfg = providers(fakes, "ab") + route('{ provider = "a" }') + '[policy]\nproviders = ["b"]\n'
    async with routed(cfg) as sc:
        status, _, raw = await post(client, sc)
    assert status == 400 and "allows none of the providers route 'main' sends to (a)" in json.loads(raw)["error"]["message"]
    assert len(a.requests) == 0
