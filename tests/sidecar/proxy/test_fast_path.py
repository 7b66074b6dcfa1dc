"""The listener's fast path (sidecar.proxy.lane) answers exactly as aiohttp does.

A differential raw-socket test: two in-process sidecars, one with `[server] fast_path = true`
and one with `fast_path = false`, each against its own echo upstream (behind a TcpRecorder, so
what each forwarded is compared too), get the same bytes from a seeded generator
(fast_path_cases; SIDECAR_FAST_PATH_SEED, SIDECAR_FAST_PATH_SCENARIOS override), played by
fast_path_wire: plain requests and variants, cut into writes, pipelined, several rounds on one
keep-alive connection. Both must give the same answers (status line, headers, de-chunked
bodies, ids and dates normalised), leave the connection in the same state (a keep-alive probe
tells), forward the same requests upstream, and the fast one must have served every request
with plain framing itself, the ones its ingress middleware refuses too (decision D3).

One difference is accepted, and only exactly (d1_extras, test_d1_is_accepted_exactly): plain
requests read in one go with a malformed one are answered by the lane, where aiohttp drops
them and answers only the malformed one's 400 (D1). SIDECAR_FAST_PATH_BASELINE=1 runs both
sidecars without the fast path: any difference then is the test's own noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from pathlib import Path

from sidecar.testing.fake_echo import ECHO_HEADER, MARKER_HEADER
from sidecar.testing.recorder import is_envelope, parse_answers
from tests.sidecar.proxy.fast_path_cases import Gen, Req, Round, Scenario
from tests.sidecar.proxy.fast_path_wire import (
    BASELINE,
    CASE_DEADLINE,
    Outcome,
    Side,
    connection,
    counts,
    d1_extras,
    differences,
    fast_served,
    for_side,
    forwarded,
    pair,
    play,
    view,
    write_cut,
)

SEED = int(os.environ.get("SIDECAR_FAST_PATH_SEED", "17"))
SCENARIOS = int(os.environ.get("SIDECAR_FAST_PATH_SCENARIOS", "160"))


# ------------------------------------------------------------------ the tests


async def play_both(fast: Side, slow: Side, sc: Scenario) -> list[Outcome]:
    """The scenario's bytes on a fresh connection to each side, at once."""
    return list(await asyncio.gather(*(
        play(side, [(for_side(rnd.data, fast, side), len(rnd.reqs), rnd.cuts, rnd.pause) for rnd in sc.rounds])
        for side in (fast, slow)
    )))  # fmt: skip


def difference(i: int, sc: Scenario, outcomes: list[Outcome], accepted: set[str]) -> str | None:
    """What differs between the two outcomes beyond D1 (whose extra markers go to `accepted`)."""
    views = [view(o) for o in outcomes]
    if views[0] == views[1] and not outcomes[0].hung:
        return None
    extras = None if BASELINE else d1_extras(sc, *outcomes)
    if extras is not None:
        accepted.update(r.marker for r in extras if r.kind.startswith("plain-"))  # those go upstream
        return None
    sent = b" || ".join(r.data[:300] for r in sc.reqs)
    return (
        f"#{i} [{sc.describe()}]\n  sent: {sent!r}\n  fast raw: {outcomes[0].data[:600]!r}\n"
        f"  slow raw: {outcomes[1].data[:600]!r}\n{differences(*views)}"
    )


def forwarding_differences(fast: Side, slow: Side, d1: set[str]) -> list[str]:
    """Markers forwarded differently: only D1's extra requests may reach the fast side's
    upstream alone (once each)."""
    problems = []
    fwd_fast, fwd_slow = forwarded(fast), forwarded(slow)
    for marker in sorted(set(fwd_fast) | set(fwd_slow) | d1):
        a, b = fwd_fast.get(marker, []), fwd_slow.get(marker, [])
        if (marker in d1 and (len(a) != 1 or b)) or (marker not in d1 and a != b):
            problems.append(f"forwarded upstream for {marker}{' (D1: the fast side alone, once)' if marker in d1 else ''}:\n{differences(a, b)}")
    return problems


async def test_fast_path_answers_like_aiohttp(hermetic_env: Path) -> None:
    async with pair(hermetic_env) as (fast, slow):
        gen = Gen(SEED, fast.host, fast.sc.token.encode())
        scenarios = [gen.scenario() for _ in range(SCENARIOS)]
        problems: list[str] = []
        unserved: list[str] = []
        d1: set[str] = set()  # markers of requests only the fast side answered (D1)
        kinds: Counter[str] = Counter()
        fast_total = slow_total = 0
        t0 = time.monotonic()
        for i, sc in enumerate(scenarios):
            kinds.update(r.kind for r in sc.reqs)
            before = counts(fast, slow)
            outcomes = await play_both(fast, slow, sc)
            if problem := difference(i, sc, outcomes, d1):
                problems.append(problem)
            await asyncio.sleep(0.01)  # let the listeners count the answers just sent
            after = counts(fast, slow)
            if not BASELINE:
                low, high = sc.fast_bounds()
                got, slow_got = after[0] - before[0], after[1] - before[1]
                fast_total, slow_total = fast_total + got, slow_total + slow_got
                if not low <= got <= high or slow_got:
                    unserved.append(f"#{i} [{sc.describe()}]: fast path served {got} (expected {low}..{high}), aiohttp-only sidecar {slow_got}")
        elapsed = time.monotonic() - t0
        problems += forwarding_differences(fast, slow, d1)

        n = sum(len(s.reqs) for s in scenarios)
        print(f"\n{len(scenarios)} scenarios, {n} requests (seed {SEED}) in {elapsed:.1f} s, {len(d1)} answered only by the lane (D1); {dict(sorted(kinds.items()))}")
        report = [f"{len(problems)} differences:\n" + "\n\n".join(problems[:40])] if problems else []
        if unserved and not BASELINE:
            report.append(f"{len(unserved)} scenarios the fast path did not serve as expected:\n" + "\n".join(unserved[:30]))
        assert not report, "\n\n".join(report)
        if not BASELINE:
            assert fast_total > 0 and slow_total == 0


def plain_request(gen: Gen, *, stream: bool) -> tuple[bytes, str]:
    m = gen.marker()
    return gen.build(b"/v1/messages?beta=true", gen.headers(m), gen.body(m, stream=stream)), m


async def keepalive_then_idle(side: Side, gen: Gen, fast: Side) -> tuple[list[str], list[str]]:
    """50 requests on one connection, a pause shorter than idle_timeout, one more; then another
    connection left idle after its answer. Returns (problems, comparable lines)."""
    problems: list[str] = []
    lines: list[str] = []
    async with connection(side) as (inbox, writer), asyncio.timeout(CASE_DEADLINE * 3):
        for i in range(51):
            if i == 50:
                await asyncio.sleep(0.5)  # idle_timeout is 1 s
            data, marker = plain_request(gen, stream=i % 3 == 0)
            start = len(inbox.data)
            await write_cut(writer, for_side(data, fast, side), [], 0.0)
            ok = await inbox.wait_for(1, start)
            got = inbox.data[start:]
            answers, _ = parse_answers(got)
            if not ok or len(answers) != 1 or answers[0].status != 200 or answers[0].headers.get(ECHO_HEADER) != marker:
                problems.append(f"{side.name}: request {i} on the kept connection got {got[:300]!r} (closed={not ok})")
                break
            lines += view(Outcome(got))

    async with connection(side) as (inbox, writer):
        data, marker = plain_request(gen, stream=False)
        await write_cut(writer, for_side(data, fast, side), [], 0.0)
        try:
            async with asyncio.timeout(CASE_DEADLINE):
                ok = await inbox.wait_for(1)
                answered = len(inbox.data)
                lines += view(Outcome(inbox.data, not ok))
                await inbox.wait_for(2)  # returns at the close: nothing more is asked
            lines.append(f"after the answer, before the idle close: {inbox.data[answered:]!r}")
        except TimeoutError:
            problems.append(f"{side.name}: an idle keep-alive connection was not closed after idle_timeout_seconds")
    return problems, lines


async def test_lane_connection_keeps_alive_and_idles_out(hermetic_env: Path) -> None:
    async with pair(hermetic_env, "idle_timeout_seconds = 1") as (fast, slow):
        before = counts(fast, slow)
        results = await asyncio.gather(
            keepalive_then_idle(fast, Gen(SEED, fast.host, b""), fast),
            keepalive_then_idle(slow, Gen(SEED, fast.host, b""), fast),
        )
        problems = [p for probs, _ in results for p in probs]
        assert not problems, "\n".join(problems)
        assert results[0][1] == results[1][1], differences(results[0][1], results[1][1])
        if not BASELINE:
            assert fast_served(fast) - before[0] == 52
            assert fast_served(slow) - before[1] == 0


async def stalled_body(side: Side, gen: Gen, fast: Side) -> tuple[Outcome, float]:
    """Head and half the body, then nothing: read until the server closes."""
    data, _ = plain_request(gen, stream=False)
    data = for_side(data, fast, side)
    head_end = data.index(b"\r\n\r\n") + 4
    half = head_end + (len(data) - head_end) // 2
    out = Outcome()
    t0 = time.monotonic()
    async with connection(side) as (inbox, writer):
        await write_cut(writer, data[:half], [], 0.0)
        try:
            async with asyncio.timeout(CASE_DEADLINE):
                await inbox.wait_for(2)  # returns at the close (one answer is expected)
        except TimeoutError:
            out.hung = True
        out.data, out.closed = inbox.data, inbox.eof
    return out, time.monotonic() - t0


async def test_stalled_body_gets_408_on_the_fast_path(hermetic_env: Path) -> None:
    async with pair(hermetic_env, "body_timeout_seconds = 0.5") as (fast, slow):
        before = counts(fast, slow)
        (out_fast, t_fast), (out_slow, t_slow) = await asyncio.gather(
            stalled_body(fast, Gen(SEED, fast.host, b""), fast), stalled_body(slow, Gen(SEED, fast.host, b""), fast)
        )
        print(f"\n408 after {t_fast:.2f} s (fast path) and {t_slow:.2f} s (aiohttp)")
        for side, out in ((fast, out_fast), (slow, out_slow)):
            answers, rest = parse_answers(out.data)
            assert not out.hung, f"{side.name}: no 408 within {CASE_DEADLINE} s: {out.data!r}"
            assert len(answers) == 1 and answers[0].status == 408 and is_envelope(answers[0]), f"{side.name}: {out.data!r}"
            assert out.closed and not rest
        assert view(out_fast) == view(out_slow), differences(view(out_fast), view(out_slow))
        after = counts(fast, slow)  # either may be fine: the lane hands a stalled body to aiohttp
        print(f"fast_served grew by {after[0] - before[0]} for the stalled request")


GARBAGE = [
    b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # a good head that stops: 408 at the header deadline on both
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\x00\x20",  # TLS to the plain port
    b"post /v1/messages HTTP/1.1\r\nHost: x\r\n",  # a bad method, the head not yet complete
    b"POST /v1/messages HTTP/1.1\r\nx-note: a\x01b\r\n",  # a control byte, the head not yet complete
    b"GARBAGE\r\n",
]


async def test_garbage_is_refused_as_soon_as_it_arrives(hermetic_env: Path) -> None:
    """aiohttp refuses bytes that cannot start a request when they arrive (400 and close);
    the fast path must not hold them until the header deadline (408)."""
    async with pair(hermetic_env, "header_timeout_seconds = 2") as (fast, slow):
        problems = []
        got = await asyncio.gather(*(play(side, [(data, 1, [], 0.0)]) for data in GARBAGE for side in (fast, slow)))
        for i, data in enumerate(GARBAGE):
            outs = got[2 * i : 2 * i + 2]
            views = [view(o) for o in outs]
            if views[0] != views[1]:
                problems.append(f"{data!r}:\n  fast: {outs[0].data!r}\n  slow: {outs[1].data!r}\n{differences(*views)}")
        assert not problems, "\n\n".join(problems)


async def paused_body(side: Side, gen: Gen, fast: Side, pause: float) -> Outcome:
    """Head and half the body, a pause, the rest: then probe the connection."""
    data, _ = plain_request(gen, stream=True)
    data = for_side(data, fast, side)
    head_end = data.index(b"\r\n\r\n") + 4
    return await play(side, [(data, 1, [head_end + (len(data) - head_end) // 2], pause)])


async def test_body_resumed_after_a_pause_is_answered(hermetic_env: Path) -> None:
    """A body that pauses longer than the lane waits (it hands the connection to aiohttp) but
    within body_timeout_seconds is answered as usual, and the connection stays usable."""
    async with pair(hermetic_env, "body_timeout_seconds = 3") as (fast, slow):
        outs = await asyncio.gather(*(paused_body(side, Gen(SEED, fast.host, b""), fast, 0.6) for side in (fast, slow)))
        for side, out in zip((fast, slow), outs, strict=True):
            answers, _ = parse_answers(out.data)
            assert [a.status for a in answers] == [200] and out.probe == 200, f"{side.name}: {out.data[:400]!r} probe={out.probe}"
        assert view(outs[0]) == view(outs[1]), differences(view(outs[0]), view(outs[1]))


async def http10_keepalive_stream(side: Side, gen: Gen, fast: Side) -> tuple[bytes, bool]:
    """An HTTP/1.0 keep-alive streaming request: what came back once the stream's last event
    was in, and whether the client could tell the answer had ended (a length, or a close)."""
    m = gen.marker()
    hs = gen._set(gen.headers(m), b"Connection", b"keep-alive")
    data = for_side(gen.build(b"/v1/messages", hs, gen.body(m, stream=True), version=b"HTTP/1.0"), fast, side)
    async with connection(side) as (inbox, writer):
        await write_cut(writer, data, [], 0.0)
        async with asyncio.timeout(CASE_DEADLINE):
            await inbox.wait_for_bytes(b"message_stop")  # the stream's last event: the answer is over
        answers, _ = parse_answers(inbox.data)
        framed = bool(answers) and "content-length" in answers[0].headers
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):  # the stream is over: an unframed answer must close now
                await inbox.wait_for(2)  # returns at the close
        return inbox.data, framed or inbox.eof


async def test_http10_keepalive_stream_has_an_end(hermetic_env: Path) -> None:
    """An HTTP/1.0 keep-alive stream cannot be chunked: it ends with the connection (aiohttp
    kept the connection open, so the client could not see where the answer ended)."""
    async with pair(hermetic_env) as (fast, slow):
        got = await asyncio.gather(*(http10_keepalive_stream(side, Gen(SEED, fast.host, b""), fast) for side in (fast, slow)))
        for side, (data, ended) in zip((fast, slow), got, strict=True):
            assert data.startswith(b"HTTP/1.") and b"message_stop" in data, f"{side.name}: {data[:300]!r}"
            assert ended, f"{side.name}: an unframed answer on a connection left open: {data[:400]!r}"


def _answer(status: bytes, body: bytes, marker: str = "") -> bytes:
    echo = f"{ECHO_HEADER}: {marker}\r\n".encode() if marker else b""
    return b"%s\r\n%sContent-Length: %d\r\n\r\n%s" % (status, echo, len(body), body)


def _req(kind: str, n: int, fast: bool | None = True) -> Req:
    return Req(kind, b"POST /v1/messages HTTP/1.1\r\n%s: fp%05d-0000abcd\r\n\r\n" % (MARKER_HEADER.encode(), n), fast)


A, C, K, X = _req("plain-json", 1), _req("plain-count", 2), _req("conn-close", 3, False), _req("control-byte", 4, False)
OK_A, OK_C = _answer(b"HTTP/1.1 200 OK", b'{"id": 1}', A.marker), _answer(b"HTTP/1.1 200 OK", b'{"input_tokens": 7}')
BAD = _answer(b"HTTP/1.0 400 Bad Request", b"Invalid method")  # aiohttp's own answer to bytes it cannot parse


def _d1(rounds: list[list[Req]], fast: bytes, slow: bytes, *, fast_probe: int | None = None) -> list[Req] | None:
    sc = Scenario([Round(reqs, [], 0.0) for reqs in rounds])
    return d1_extras(sc, Outcome(fast, False, False, fast_probe), Outcome(slow, True, False, None))


def test_d1_is_accepted_exactly() -> None:
    """The one accepted difference (D1) and its near misses, which must stay differences."""
    assert _d1([[A, C, X]], OK_A + OK_C + BAD, BAD) == [A, C]
    assert _d1([[A, C, X]], OK_A + OK_C + BAD, OK_A + BAD) == [C]  # aiohttp read A alone first
    assert _d1([[A, C], [X]], OK_A + OK_C + BAD, OK_A + OK_C + BAD) is None  # no difference at all: not D1
    assert _d1([[A, C], [X]], OK_A + OK_C + BAD, BAD) is None  # the extras were written before the malformed one's round
    assert _d1([[A, C, X]], OK_C + OK_A + BAD, BAD) is None  # answers out of order
    assert _d1([[A, C, X]], OK_A + BAD + OK_C, OK_A + BAD) is None  # an extra after aiohttp's 400
    assert _d1([[A, C, X]], OK_A + OK_C + BAD, BAD, fast_probe=200) is None  # the fast side's connection stayed open
    assert _d1([[K, A]], _answer(b"HTTP/1.1 200 OK", b"{}", K.marker) + OK_A, _answer(b"HTTP/1.1 200 OK", b"{}", K.marker)) is None
    assert _d1([[A, X]], _answer(b"HTTP/1.1 200 OK", b'{"id": 1}', "fp00009-0000abcd") + BAD, BAD) is None  # not A's answer
