"""The write-ahead journal: what it holds after a crash is recovered into the store exactly
once, torn lines and chain gaps are survived, segments rotate and go away once committed,
and a journal that cannot be written says so and recovers."""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path
from typing import Any

import aiohttp

from sidecar.audit.chain import GENESIS, Entry
from sidecar.audit.log import HEAD_FILE, AuditLog
from sidecar.audit.verify import entries_in_db, verify
from sidecar.ledger.journal import JOURNAL_DIR, Journal, Recovered, audit_line
from sidecar.ledger.pricing import Pricing
from sidecar.ledger.store import open_db
from sidecar.ledger.writer import Ledger
from sidecar.testing.factories import usage_record
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_behaviours import Text
from sidecar.testing.harness import anthropic_config, sidecar_in_process


def store_rows(db_file: Path) -> dict[str, tuple[int, str | None]]:
    db = open_db(db_file)
    try:
        return {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, input_tokens, session_id FROM usage")}
    finally:
        db.close()


def chain(db_file: Path) -> list[Entry]:
    db = open_db(db_file)
    try:
        return list(entries_in_db(db))
    finally:
        db.close()


def entries(n: int, first: int = 1, prev: str = GENESIS) -> list[Entry]:
    out = []
    for seq in range(first, first + n):
        e = Entry.make(seq, 1_790_000_000.0 + seq, "request", f"req{seq}", {"n": seq}, prev)
        out.append(e)
        prev = e.hash
    return out


def journal_entry(journal: Journal, e: Entry) -> int:
    return journal.add(audit_line(e.seq, e.ts, e.kind, e.request_id, e.data, e.prev_hash, e.hash))


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_a_crash_loses_nothing_the_journal_holds(tmp_path: Path) -> None:
    """Records journaled but never committed (the process died) are in the store after the
    next start's recovery; those committed before the crash are not written twice."""
    db_file, jdir = tmp_path / "s.db", tmp_path / "journal"
    journal = Journal(jdir)
    assert journal.recover(db_file).segments == 0
    ledger = Ledger(db_file, Pricing(), journal)
    await ledger.start()
    recs = [usage_record(input_tokens=100 + i, session_id=f"s{i}") for i in range(10)]
    for rec in recs[:4]:
        ledger.record(rec)
    journal.sync()
    await ledger.flush()  # the first four are committed...
    for rec in recs[4:]:
        ledger.record(rec)
    journal.sync()  # ...the other six only journaled when the process "dies" here
    chained = entries(5)
    for e in chained:
        journal_entry(journal, e)
    journal.sync()
    assert set(store_rows(db_file)) == {r.id for r in recs[:4]}

    again = Journal(jdir)
    found = again.recover(db_file)
    assert (found.usage, found.audit, found.bad_lines, found.audit_dropped) == (6, 5, 0, 0)
    assert store_rows(db_file) == {r.id: (r.input_tokens, r.session_id) for r in recs}
    assert [e.hash for e in chain(db_file)] == [e.hash for e in chained]
    assert segments(jdir) == []  # recovered, then deleted
    assert Journal(jdir).recover(db_file).usage == 0  # and never replayed twice
    await ledger.close()


async def test_recovery_continues_the_chain_and_survives_torn_lines_and_gaps(tmp_path: Path) -> None:
    db_file, jdir = tmp_path / "s.db", tmp_path / "journal"
    log = AuditLog(db_file, tmp_path / HEAD_FILE)
    await log.start()
    committed = [log.append("request", {"n": i}, f"r{i}") for i in range(3)]
    await log.close()
    more = entries(4, first=4, prev=committed[-1].hash)
    jdir.mkdir()
    lines = [audit_line(e.seq, e.ts, e.kind, e.request_id, e.data, e.prev_hash, e.hash) for e in [*committed[1:], *more]]
    del lines[4]  # entry #6 never reached the journal (its write failed): #7 cannot be chained
    (jdir / "00000007.journal").write_bytes(b"".join(lines[:3]) + b'["u","01TORN')  # a torn last line
    (jdir / "00000008.journal").write_bytes(b"".join(lines[3:]))

    found = Journal(jdir).recover(db_file)

    assert (found.audit, found.audit_dropped, found.bad_lines) == (2, 1, 1)
    got = chain(db_file)
    assert [e.seq for e in got] == [1, 2, 3, 4, 5]
    assert verify(got).ok


async def test_segments_rotate_and_are_deleted_once_committed(tmp_path: Path) -> None:
    jdir = tmp_path / "journal"
    journal = Journal(jdir, segment_bytes=1_000)
    journal.recover(tmp_path / "s.db")
    line = b'["u","' + b"x" * 90 + b'"]\n'
    held: list[int] = []
    for i in range(200):
        held.append(journal.add(line))
        journal.sync()
        if i % 10 == 9:  # the writer commits every tenth request's batch
            journal.release(held)
            held.clear()
            assert len(segments(jdir)) <= 2, segments(jdir)
    assert journal.segments_open <= 1
    journal.close()
    assert segments(jdir) == []


async def test_a_journal_that_cannot_be_written_says_so_and_recovers(tmp_path: Path) -> None:
    jdir = tmp_path / "journal"
    journal = Journal(jdir, segment_bytes=100)
    journal.recover(tmp_path / "s.db")
    journal.add(b'["u"]\n' * 30)
    journal.sync()  # rotates: the next write opens a new segment
    shutil.rmtree(jdir)
    journal.add(b'["u"]\n')
    journal.sync()
    assert journal.error is not None and "No such file or directory" in journal.error
    journal.sync()  # still failing: the probe changes nothing
    assert journal.error is not None
    jdir.mkdir()
    journal.sync()  # the probe (a blank line) succeeds: the journal is writable again
    assert journal.error is None


async def test_the_ledger_journal_holds_each_record_until_it_is_committed(tmp_path: Path) -> None:
    records = 50
    db_file, jdir = tmp_path / "s.db", tmp_path / "journal"
    journal = Journal(jdir)
    journal.recover(db_file)
    ledger = Ledger(db_file, Pricing(), journal)
    await ledger.start()
    for i in range(records):
        ledger.record(usage_record(input_tokens=i))
        journal.sync()
    assert journal.segments_open == 1
    await asyncio.wait_for(ledger.flush(), 10)
    assert journal.segments_open == 0
    await ledger.close()
    journal.close()
    assert segments(jdir) == []
    assert len(store_rows(db_file)) == records


def journaled(jdir: Path) -> str:
    return "".join(p.read_text() for p in sorted(jdir.glob("*.journal")))


async def test_an_answer_is_journaled_before_its_final_byte_reaches_the_client(
    hermetic_env: Path, fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    """The usage row and the audit entry are in the journal (so they survive a SIGKILL)
    when the client has only just received message_stop, or a whole JSON answer."""
    fake.default = Text("one two three", delay_between_events=0.01)
    async with sidecar_in_process(anthropic_config(fake.url), hermetic_env) as sc:
        jdir = sc.paths.data_dir / JOURNAL_DIR
        body = {"model": "claude-opus-4-8", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
        async with client.post(sc.url + "/v1/messages", json={**body, "stream": True}) as resp:
            rid = resp.headers["x-sidecar-request-id"]
            async for line in resp.content:
                if line.startswith(b"event: message_stop"):
                    break
                assert rid not in journaled(jdir)  # not before the answer is complete
            text = journaled(jdir)
            assert f'["u","{rid}"' in text and f'"request","{rid}"' in text
        async with client.post(sc.url + "/v1/messages", json=body) as resp:
            rid = resp.headers["x-sidecar-request-id"]
            text = journaled(jdir)  # the body has not been read yet
            assert f'["u","{rid}"' in text and f'"request","{rid}"' in text
            await resp.read()


def _value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 2 else 7)
    if pick == 0:
        return rng.choice([0, 1, -7, 2**40, 10**20])
    if pick == 1:
        return rng.choice([0.0, -0.0, 0.1, 1e-4, 3.5e-5, 1e16, 1e20, 123456.789, rng.random()])
    if pick == 2:
        return rng.choice(["", "plain", 'quote " and \\ backslash', "é日本🙂", "tab\tnew\nline\x00nul", "\u2028"])
    if pick == 3:
        return None
    if pick == 4:
        return rng.random() < 0.5
    if pick in (5, 6):
        return f"s{rng.randrange(1000)}"
    if pick == 7:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{rng.randrange(20)}": _value(rng, depth + 1) for _ in range(rng.randrange(4))}


async def _run_ops(home: Path, ops: list[tuple[str, dict[str, Any], str | None]], crash: bool) -> Recovered | None:
    """Hold or append each entry on a journaled log; a crash leaves the held ones unchained
    (the process died after their answers went out) and recovers the journal afterwards."""
    db_file, jdir = home / "s.db", home / "journal"
    journal = Journal(jdir)
    journal.recover(db_file)
    ticks = iter(range(10**6))
    log = AuditLog(db_file, home / HEAD_FILE, clock=lambda: 1_790_000_000.0 + next(ticks) / 7, journal=journal)
    await log.start()
    for i, (how, data, rid) in enumerate(ops):
        if how == "hold":
            log.hold("request", data, rid)
        else:
            log.append("policy", data, rid, sync=False)
        if i % 5 == 4:
            journal.sync()
    journal.sync()
    if crash:
        log._held.clear()  # never chained: the journal's pre-images are all that is left
    await log.close()
    journal.close()
    return Journal(jdir).recover(db_file) if crash else None


async def test_held_entries_are_recovered_with_the_hashes_the_process_would_have_given(tmp_path: Path) -> None:
    """The request path journals an audit entry's pre-image before the answer and chains it
    after. Differential, over seeded mixes of held and appended entries with awkward data
    (floats both encoders spell differently, escapes, non-ASCII, nesting): a process that
    dies with entries held and is recovered ends with the very chain, hash for hash, of one
    that settled them."""
    for seed in range(12):
        rng = random.Random(seed)
        ops: list[tuple[str, dict[str, Any], str | None]] = []
        for n in range(rng.randrange(1, 25)):
            data = {f"f{j}": _value(rng) for j in range(rng.randrange(6))}
            ops.append(("hold" if rng.random() < 0.75 else "append", data, rng.choice([f"r{n}", None])))
        found = await _run_ops(tmp_path / f"crash{seed}", ops, crash=True)
        await _run_ops(tmp_path / f"clean{seed}", ops, crash=False)
        crashed, clean = chain(tmp_path / f"crash{seed}" / "s.db"), chain(tmp_path / f"clean{seed}" / "s.db")
        assert found is not None and found.bad_lines == 0 and found.audit_dropped == 0, seed
        assert [(e.seq, e.hash, e.data) for e in crashed] == [(e.seq, e.hash, e.data) for e in clean], seed
        assert len(clean) == len(ops) and verify(crashed).ok, seed


async def test_an_append_chains_the_held_entries_first_and_unencodable_data_is_not_held(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.recover(tmp_path / "s.db")
    log = AuditLog(tmp_path / "s.db", tmp_path / HEAD_FILE, journal=journal)
    await log.start()
    log.hold("request", {"n": 1}, "r1")
    log.hold("request", {"n": 2}, "r2")
    assert log.pending == 2
    stop = log.append("stop", {"pid": 1})
    assert stop.seq == 3 and log.pending == 3 and not log._held
    log.hold("request", {"bad": "lone \udc80 surrogate"}, "r4")  # a pre-image cannot carry it
    assert not log._held
    await log.close()
    journal.close()
    got = chain(tmp_path / "s.db")
    assert [e.seq for e in got] == [1, 2, 3, 4] and verify(got).ok
    assert [e.request_id for e in got] == ["r1", "r2", None, "r4"] and "lone ? surrogate" in got[3].data


async def test_held_entries_reach_the_store_when_the_journal_disk_is_full(tmp_path: Path) -> None:
    """A held entry's pre-image that could not be journaled (ENOSPC: the segment is /dev/full)
    is still chained and written to the store: the journal is a crash buffer, never the only
    copy of an entry the running daemon holds."""
    db_file, jdir = tmp_path / "s.db", tmp_path / "journal"
    journal = Journal(jdir)
    journal.recover(db_file)
    (jdir / "00000001.journal").symlink_to("/dev/full")
    log = AuditLog(db_file, tmp_path / HEAD_FILE, journal=journal)
    await log.start()
    log.hold("request", {"n": 0}, "r0")
    journal.sync()
    assert journal.error is not None and "No space left" in journal.error
    for i in range(1, 5):  # the journal moves on to a new segment; the entries go on being held
        log.hold("request", {"n": i}, f"r{i}")
        journal.sync()
    assert log.pending == 5
    await log.close()
    journal.close()
    got = chain(db_file)
    assert [e.request_id for e in got] == [f"r{i}" for i in range(5)] and verify(got).ok
