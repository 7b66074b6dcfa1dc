"""The org server under attack and over a flaky network, on SQLite and on PostgreSQL.

Odd inputs at the HTTP API (text the store cannot keep, non-UTF-8 bytes, deep nesting,
wrong types) get a 4xx JSON error and store nothing; overlapping usage batches posted
concurrently in any order count every record once; one enrollment token redeemed by
several OS processes at once, against two server processes, enrolls one device; a server
SIGKILLed while devices upload loses and doubles nothing once they retry.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.ledger.record import new_ulid
from sidecar.testing.central import Central, CentralProcess
from sidecar.testing.factories import usage_dicts

FAST = ("--max-wait", "0.2", "--enroll-per-minute", "100000", "--auth-failures-per-minute", "100000")


def _http(base: str, method: str, path: str, token: str | None = None, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    """A blocking call (for hypothesis and child processes): (status, parsed JSON or raw bytes)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, out = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, out = e.code, e.read()
    try:
        return status, json.loads(out) if out else None
    except ValueError:
        return status, out


def _ok(base: str, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    status, answer = _http(base, method, path, token, body)
    assert status < 300, (path, status, answer)
    return answer


# ------------------------------------------------------------------ odd inputs

# Strings a JSON body can carry that no backend can keep as text: NUL (PostgreSQL refuses
# it) and unpaired surrogates (not UTF-8; json.dumps writes them as \ud800 escapes).
_POISON = st.sampled_from(["\x00", "\ud800", "\udfff", "\udc80"])
_BAD_TEXT = st.tuples(st.text(max_size=8), _POISON, st.text(max_size=8)).map("".join)


def _where(device: str, admin: str) -> list[tuple[str, str, str, dict[str, Any], list[str]]]:
    """(method, path, token, a valid body, the fields a bad string may go in)."""
    ulid = new_ulid()
    record = {"id": ulid, "ts": time.time(), "model": "claude-haiku-4-5", "route": "default", "provider": "anthropic"}
    return [
        ("POST", "/v1/usage", device, {"records": [record]}, ["records.0.model", "records.0.route", "records.0.provider"]),
        ("POST", "/v1/device/status", device, {"policy_version": 0, "policy_error": "x"}, ["policy_error"]),
        ("POST", "/v1/admin/teams", admin, {"name": "t" + ulid}, ["name"]),
        ("POST", "/v1/admin/developers", admin, {"email": ulid + "@example.com", "name": "n"}, ["email", "name"]),
        ("POST", "/v1/admin/admins", admin, {"name": "a" + ulid, "role": "viewer"}, ["name"]),
        ("POST", "/v1/admin/policy", admin, {"document": {"budget": {"daily_usd": 5}}, "comment": "c"}, ["comment"]),
        ("POST", "/v1/admin/policy", admin, {"document": {"tools": {"deny": ["WebFetch"]}}}, ["document.tools.deny.0"]),
        ("POST", "/v1/admin/enrollment-tokens", admin, {"developer": "fuzz@example.com"}, ["developer"]),
    ]


def _put(body: dict[str, Any], path: str, value: str) -> dict[str, Any]:
    out: Any = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[int(last) if isinstance(node, list) else last] = value
    return dict(out)


def _snapshot(base: str, admin: str) -> tuple[Any, ...]:
    """What a refused request must leave unchanged: the audit chain, usage, people, policy."""
    return (
        len(_ok(base, "GET", "/v1/admin/audit", admin)["entries"]),
        _ok(base, "GET", "/v1/admin/usage?by=model", admin)["rows"],
        _ok(base, "GET", "/v1/admin/teams", admin), _ok(base, "GET", "/v1/admin/developers", admin),
        _ok(base, "GET", "/v1/admin/policy/history", admin),
        [(d["id"], d["policy_error"]) for d in _ok(base, "GET", "/v1/admin/devices", admin)["devices"]],
    )  # fmt: skip


def _refused(status: int, answer: Any, what: Any) -> None:
    assert 400 <= status < 500, (what, status, answer)
    assert isinstance(answer, dict) and answer["type"] == "error" and answer["error"]["message"], (what, answer)


def _fuzz_text(base: str, admin: str, device: str) -> None:
    where = _where(device, admin)

    @settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(case=st.integers(0, 100), pick=st.integers(0, 100), bad=_BAD_TEXT)
    def run(case: int, pick: int, bad: str) -> None:
        method, path, token, body, fields = where[case % len(where)]
        sent = _put(body, fields[pick % len(fields)], bad)
        before = _snapshot(base, admin)
        status, answer = _http(base, method, path, token, raw=json.dumps(sent).encode())
        _refused(status, answer, sent)
        assert _snapshot(base, admin) == before, sent

    run()
    # the valid bodies are accepted, so the refusals above were for the bad string alone
    for method, path, token, body, _ in where:
        status, answer = _http(base, method, path, token, body)
        assert status < 300, (path, status, answer)


def _odd_bodies(base: str, admin: str, device: str) -> None:
    before = _snapshot(base, admin)
    deep = b'{"records": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    for method, path, token, raw in [
        ("POST", "/v1/usage", device, b'{"records": [{"id": "\xff\xfe", "ts": 1, "model": "m"}]}'),  # not UTF-8
        ("POST", "/v1/admin/teams", admin, b'{"name": "caf\xe9"}'),  # Latin-1, not UTF-8
        ("POST", "/v1/usage", device, deep),
        ("POST", "/v1/admin/policy", admin, b'{"document": ' + b'{"a": ' * 20_000 + b"1" + b"}" * 20_001),
        ("POST", "/v1/usage", device, b'{"records": {"id": "x"}}'),
        ("POST", "/v1/usage", device, b"[1, 2]"),
        ("POST", "/v1/usage", device, b'{"records": [{"id": "' + new_ulid().encode() + b'", "ts": 1e9, "model": ["m"]}]}'),
        ("POST", "/v1/leases", device, b'{"amount_usd": "5", "ttl_seconds": {}}'),
        ("POST", "/v1/admin/enrollment-tokens", admin, b'{"developer": 5}'),
        ("POST", "/v1/enroll", None, b'{"token": ["cse_x"], "name": "laptop"}'),
        ("POST", "/v1/leases/%00lease/return", device, b'{"used_usd": 0}'),
        ("DELETE", "/v1/admin/devices/dvc%00x", admin, None),
        ("GET", "/v1/admin/policy?scope=team:%00", admin, None),
        ("GET", "/v1/policy?after=1&wait=nan", device, None),
    ]:
        status, answer = _http(base, method, path, token, raw=raw)
        _refused(status, answer, (path, raw[:60] if raw else None))
    assert _snapshot(base, admin) == before


async def test_text_the_store_cannot_keep_and_odd_bodies_are_a_4xx_and_store_nothing(db_url: str) -> None:
    async with CentralProcess(db_url, *FAST) as server:
        assert server.bootstrap_token
        base, admin = server.url, server.bootstrap_token
        await asyncio.to_thread(_ok, base, "POST", "/v1/admin/developers", admin, {"email": "fuzz@example.com"})
        enr = await asyncio.to_thread(_ok, base, "POST", "/v1/admin/enrollment-tokens", admin, {"developer": "fuzz@example.com"})
        # a device name the store cannot keep does not use up the token
        for name in ("lap\x00top", "lap\ud800top"):
            status, answer = await asyncio.to_thread(_http, base, "POST", "/v1/enroll", None, {"token": enr["token"], "name": name})
            _refused(status, answer, name)
        device = (await asyncio.to_thread(_ok, base, "POST", "/v1/enroll", None, {"token": enr["token"], "name": "laptop"}))["credential"]
        await asyncio.to_thread(_odd_bodies, base, admin, device)
        await asyncio.to_thread(_fuzz_text, base, admin, device)


# Names other admins' terminals print: an escape sequence, a carriage return, a C1 control,
# a right-to-left override ("\u202egnp.exe" shows as "exe.png").
_UNSHOWABLE = ["lap\x1b[2J\x1b[Htop", "ok\rEVIL", "a\x9bb", "\u202egnp.exe", "tab\there", "x\u2066y"]


async def test_names_that_would_drive_an_admins_terminal_are_refused(central: Central) -> None:
    """A device name is chosen by whoever enrolls; team, developer and admin names by admins.
    All of them are printed by `admin devices|teams|developers list` on other admins'
    terminals, so none may carry control characters or bidirectional marks."""
    await central.admin("POST", "/v1/admin/developers", json={"email": "eve@example.com"})
    enr = await central.admin("POST", "/v1/admin/enrollment-tokens", json={"developer": "eve@example.com"})
    before = (await central.admin("GET", "/v1/admin/teams"), await central.admin("GET", "/v1/admin/developers"),
              await central.admin("GET", "/v1/admin/devices"), len((await central.admin("GET", "/v1/admin/audit"))["entries"]))  # fmt: skip
    for bad in _UNSHOWABLE:
        for path, body, token in [
            ("/v1/enroll", {"token": enr["token"], "name": bad}, None),
            ("/v1/admin/teams", {"name": bad}, central.admin_token),
            ("/v1/admin/developers", {"email": "mallory@example.com", "name": bad}, central.admin_token),
            ("/v1/admin/developers", {"email": bad + "@example.com"}, central.admin_token),
            ("/v1/admin/admins", {"name": bad, "role": "viewer"}, central.admin_token),
        ]:
            status, answer = await central.call("POST", path, token, json=body)
            assert status == 400 and "plain text" in answer["error"]["message"], (path, bad, status, answer)
    after = (await central.admin("GET", "/v1/admin/teams"), await central.admin("GET", "/v1/admin/developers"),
             await central.admin("GET", "/v1/admin/devices"), len((await central.admin("GET", "/v1/admin/audit"))["entries"]))  # fmt: skip
    assert after == before
    # ordinary names in any script still go in, and the token was not used up by the refusals
    status, answer = await central.call("POST", "/v1/enroll", json={"token": enr["token"], "name": "Zoë's laptop 💻 (工作)"})
    assert status == 201, answer
    await central.admin("POST", "/v1/admin/teams", json={"name": "Équipe ☕"})


# ------------------------------------------------------------------ usage batches


async def _count(c: Central) -> tuple[int, int, float]:
    rows = (await c.admin("GET", "/v1/admin/usage", params={"by": "day"}))["rows"]
    return sum(r["requests"] for r in rows), sum(r["input_tokens"] for r in rows), sum(r["cost_usd"] for r in rows)


async def test_overlapping_batches_in_any_order_at_once_count_every_record_once(central: Central) -> None:
    """Batches that share records, posted concurrently in different orders (a retry after
    a timeout racing the original, two devices' outboxes): on PostgreSQL rows locked in
    opposite orders deadlock unless they go in in one order; every call must answer 200."""
    creds = [(await central.enroll_device(f"d{i}@example.com"))["credential"] for i in range(2)]
    rnd = random.Random(2026)
    everything: dict[str, dict[str, Any]] = {}
    for round_ in range(4):
        records = usage_dicts(600, seed=round_, ts=time.time() - round_ * 1000)
        everything.update((r["id"], r) for r in records)
        batches = []
        for i in range(4):
            part = records[rnd.randrange(0, 200) : rnd.randrange(400, 601)]
            batches.append(part[::-1] if i % 2 else part)
        answers = await asyncio.gather(*(central.call("POST", "/v1/usage", creds[i % 2], json={"records": b}) for i, b in enumerate(batches)))
        assert [s for s, _ in answers] == [200] * 4, [a for s, a in answers if s != 200][:1]
        for (_, a), b in zip(answers, batches, strict=True):
            assert a["accepted"] + a["duplicates"] == len(b) and a["conflicts"] == []
        # whatever the batches missed arrives once more, as an outbox catching up would send it
        status, _ = await central.call("POST", "/v1/usage", creds[0], json={"records": records})
        assert status == 200
    count, tokens, cost = await _count(central)
    assert count == len(everything)
    assert tokens == sum(r["input_tokens"] for r in everything.values())
    assert abs(cost - sum(r["cost_usd"] for r in everything.values())) < 1e-6


async def test_an_id_repeated_in_one_batch_keeps_its_first_content(central: Central) -> None:
    """The conflicting copy is reported as refused, so it must not be what the server keeps."""
    cred = (await central.enroll_device("ada@example.com"))["credential"]
    [first] = usage_dicts(1, seed=5)
    status, answer = await central.call("POST", "/v1/usage", cred, json={"records": [first, dict(first, cost_usd=77.0), first]})
    assert status == 200 and answer["accepted"] == 1 and answer["conflicts"] == [first["id"]]
    assert await _count(central) == (1, first["input_tokens"], first["cost_usd"])
    status, answer = await central.call("POST", "/v1/usage", cred, json={"records": [first]})
    assert (status, answer) == (200, {"accepted": 0, "duplicates": 1, "conflicts": []})


# ------------------------------------------------------------------ several OS processes

_ENROLL_CHILD = textwrap.dedent(
    """
    import json, sys, time, urllib.error, urllib.request
    url, token, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    req = urllib.request.Request(url + "/v1/enroll", json.dumps({"token": token, "name": "race"}).encode(),
                                 {"content-type": "application/json"}, method="POST")
    time.sleep(max(0.0, start - time.time()))
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            print(r.status, json.loads(r.read())["device_id"])
    except urllib.error.HTTPError as e:
        print(e.code, json.loads(e.read())["error"]["type"])
    """
)


async def test_one_token_redeemed_by_many_processes_at_once_enrolls_one_device(db_url: str) -> None:
    """Eight OS processes redeem the same enrollment token at the same instant, split over
    two server processes on one database: exactly one device exists afterwards."""
    async with CentralProcess(db_url, *FAST) as one, CentralProcess(db_url, *FAST) as two:
        admin = one.bootstrap_token or two.bootstrap_token
        assert admin
        await asyncio.to_thread(_ok, one.url, "POST", "/v1/admin/developers", admin, {"email": "race@example.com"})
        enr = await asyncio.to_thread(_ok, one.url, "POST", "/v1/admin/enrollment-tokens", admin, {"developer": "race@example.com"})
        start = time.time() + 1.0  # every child is up and waiting by then
        children = [
            await asyncio.create_subprocess_exec(sys.executable, "-c", _ENROLL_CHILD, (one, two)[i % 2].url, enr["token"],
                                                 str(start), stdout=asyncio.subprocess.PIPE)
            for i in range(8)
        ]  # fmt: skip
        outs = [(await asyncio.wait_for(c.communicate(), 30))[0].decode().split() for c in children]
        assert sorted(o[0] for o in outs) == ["201"] + ["401"] * 7, outs
        assert all(o[1] == "authentication_error" for o in outs if o[0] == "401")
        devices = (await asyncio.to_thread(_ok, two.url, "GET", "/v1/admin/devices", admin))["devices"]
        assert [d["id"] for d in devices] == [o[1] for o in outs if o[0] == "201"]
        audit = (await asyncio.to_thread(_ok, one.url, "GET", "/v1/admin/audit", admin))["entries"]
        assert [e["kind"] for e in audit].count("device.enroll") == 1


async def test_a_server_sigkilled_mid_upload_loses_and_doubles_nothing(db_url: str) -> None:
    """A device keeps posting batches (some repeated, as after an unseen answer) while the
    server is SIGKILLed at random moments and restarted on the same database; every batch
    without an answer is posted again. The server ends with each record exactly once."""
    server = await CentralProcess(db_url, *FAST).__aenter__()
    try:
        admin = server.bootstrap_token
        assert admin
        await asyncio.to_thread(_ok, server.url, "POST", "/v1/admin/developers", admin, {"email": "k@example.com"})
        enr = await asyncio.to_thread(_ok, server.url, "POST", "/v1/admin/enrollment-tokens", admin, {"developer": "k@example.com"})
        cred = (await asyncio.to_thread(_ok, server.url, "POST", "/v1/enroll", None, {"token": enr["token"]}))["credential"]
        records = usage_dicts(4000, seed=3)
        batches = [records[i : i + 500] for i in range(0, len(records), 300)]  # overlapping
        pending = list(batches)
        killed = interrupted = 0
        while pending:
            base = server.url

            answered = threading.Event()  # the first batch of this round went in

            def upload(todo: list[list[dict[str, Any]]], base: str = base, answered: threading.Event = answered) -> int:
                done = 0
                for b in todo:
                    try:
                        status, _ = _http(base, "POST", "/v1/usage", cred, {"records": b})
                    except OSError:
                        return done
                    if status != 200:
                        return done
                    done += 1
                    answered.set()
                return done

            sender = asyncio.ensure_future(asyncio.to_thread(upload, list(pending)))
            kill = killed < 2 and len(pending) > 2
            if kill:
                # once a batch is in, with the rest still to go: a kill in the middle of the uploads
                await asyncio.to_thread(answered.wait, 30)
                assert server._proc is not None
                os.kill(server._proc.pid, signal.SIGKILL)
                killed += 1
            done = await sender
            interrupted += kill and done < len(pending)
            # the batch in flight when the server died may have been stored: it is sent again
            pending = pending[done:]
            if kill or pending:
                await server.stop()
                server = await CentralProcess(db_url, *FAST).__aenter__()
        assert interrupted  # at least one kill came in the middle of the uploads
        count_rows = _ok(server.url, "GET", "/v1/admin/usage?by=day", admin)["rows"]
        assert sum(r["requests"] for r in count_rows) == len(records)
        assert sum(r["output_tokens"] for r in count_rows) == sum(r["output_tokens"] for r in records)
        assert abs(sum(r["cost_usd"] for r in count_rows) - sum(r["cost_usd"] for r in records)) < 1e-6
    finally:
        await server.stop()
