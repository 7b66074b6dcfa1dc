"""Attacks on the audit log's promises, by someone with write access to the user's files and
by a crash: every single-point tamper of the table or the head file is reported by
`audit verify` (through the real CLI), a crash reads as a crash and a tamper never as one,
an export verifies and recomputes from its lines alone with awkward data and any locale,
and readers in other processes never raise a false alarm while a real daemon appends."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.audit.chain import GENESIS, Entry, canonical
from sidecar.audit.log import HEAD_FILE, AuditLog, Head, _write_head
from sidecar.cli import cli
from sidecar.ledger.store import open_db
from sidecar.testing.audit import audit_entries, tamper
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_behaviours import Text
from sidecar.testing.governed import governed
from sidecar.testing.harness import anthropic_config, start_child

ROOT = Path(__file__).resolve().parents[3]
INSERT = "INSERT INTO audit (seq, ts, kind, request_id, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"


# ---------------------------------------------------------------- stores and tampers


def chain_of(datas: list[dict[str, Any]], kinds: list[str] | None = None) -> list[Entry]:
    out: list[Entry] = []
    prev = GENESIS
    for i, data in enumerate(datas, 1):
        kind = kinds[i - 1] if kinds else "request"
        e = Entry.make(i, 1_790_000_000.0 + i * 1.25, kind, f"req{i}" if kind == "request" else None, data, prev)
        out.append(e)
        prev = e.hash
    return out


_TEMPLATE: dict[str, bytes] = {}


def empty_store() -> bytes:
    """A migrated store with an empty `audit` table (its append-only triggers included)."""
    if "db" not in _TEMPLATE:
        with tempfile.TemporaryDirectory() as tmp:
            db = open_db(Path(tmp) / "template.db")
            db.conn.execute("PRAGMA journal_mode = DELETE")  # one file to copy
            db.close()
            _TEMPLATE["db"] = (Path(tmp) / "template.db").read_bytes()
    return _TEMPLATE["db"]


def make_home(home: Path, entries: list[Entry]) -> Path:
    """A sidecar home whose store holds `entries`, with the head file the log writes."""
    data = home / "data"
    shutil.rmtree(home, ignore_errors=True)
    data.mkdir(parents=True)
    store = data / "sidecar.db"
    store.write_bytes(empty_store())
    conn = sqlite3.connect(store)
    with conn:
        conn.executemany(INSERT, [(e.seq, e.ts, e.kind, e.request_id, e.data, e.prev_hash, e.hash) for e in entries])
    conn.close()
    if entries:
        _write_head(data / HEAD_FILE, Head(entries[-1].seq, entries[-1].hash))
    return store


def verify_in_process(home: Path) -> tuple[int, dict[str, Any]]:
    """`audit verify --json` through the CLI (click, in this process)."""
    env = {"CLAUDE_SIDECAR_HOME": str(home)}
    result = CliRunner().invoke(cli, ["audit", "verify", "--json"], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def child_env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "CLAUDE_SIDECAR_HOME": str(home), "CLAUDE_SIDECAR_CONFIG": str(home / "config.toml"), **extra}


def cli_procs(runs: list[tuple[Path, list[str], dict[str, str]]], parallel: int = 3) -> list[subprocess.CompletedProcess[bytes]]:
    """Run `python -m sidecar ARGS` for each (home, args, env), a few at a time."""
    results: list[subprocess.CompletedProcess[bytes] | None] = [None] * len(runs)
    running: list[tuple[int, subprocess.Popen[bytes]]] = []
    todo = list(enumerate(runs))
    while todo or running:
        while todo and len(running) < parallel:
            i, (home, args, extra) = todo.pop(0)
            proc = subprocess.Popen(
                [sys.executable, "-m", "sidecar", *args], env=child_env(home, **extra), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            running.append((i, proc))
        i, proc = running.pop(0)
        out, err = proc.communicate(timeout=60)
        results[i] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return [r for r in results if r is not None]


DATAS: list[dict[str, Any]] = [
    {"n": 1, "decisions": [{"stage": "budget", "action": "allow", "reason": "ok"}], "cost_usd": 2.5e-05},
    {"n": 2, "text": "é 日本 🙂 nul\x00 tab\t", "big": 10**20, "tiny": 1e-05, "huge": 1e16},
    {"n": 3, "nested": {"a": [1, 2.5, None, True], "b": {"c": "d"}}},
    {"n": 4, "neg": -0.0, "line_sep": "\u2028"},
    {"n": 5},
]


def _forged(store_entries: list[Entry], seq: int, data: dict[str, Any]) -> Entry:
    e = store_entries[seq - 1]
    return Entry.make(e.seq, e.ts, e.kind, e.request_id, data, e.prev_hash)


# Each single-point tamper of a 6-entry log (#6 a stop entry) and the entry `verify` must name.
def _tampers(entries: list[Entry]) -> dict[str, tuple[Callable[[Path], None], int]]:
    head = lambda store: store.parent / HEAD_FILE  # noqa: E731
    forged = _forged(entries, 3, {"n": 333})
    e3 = entries[2]
    return {
        "ts": (lambda s: tamper(s, ("UPDATE audit SET ts = ts + 0.001 WHERE seq = 3", [])), 3),
        "ts as text": (lambda s: tamper(s, ("UPDATE audit SET ts = 'yesterday' WHERE seq = 3", [])), 3),
        "kind": (lambda s: tamper(s, ("UPDATE audit SET kind = 'policy' WHERE seq = 3", [])), 3),
        "kind as a blob": (lambda s: tamper(s, ("UPDATE audit SET kind = CAST(kind AS BLOB) WHERE seq = 3", [])), 3),
        "request_id": (lambda s: tamper(s, ("UPDATE audit SET request_id = 'req99' WHERE seq = 3", [])), 3),
        "request_id to NULL": (lambda s: tamper(s, ("UPDATE audit SET request_id = NULL WHERE seq = 3", [])), 3),
        "request_id not UTF-8": (lambda s: tamper(s, ("UPDATE audit SET request_id = CAST(X'7265719f' AS TEXT) WHERE seq = 3", [])), 3),
        "data": (lambda s: tamper(s, ("UPDATE audit SET data = ? WHERE seq = 3", [canonical({"n": 333})])), 3),
        "data not UTF-8": (lambda s: tamper(s, ("UPDATE audit SET data = CAST(X'7b226e223a33ff7d' AS TEXT) WHERE seq = 2", [])), 2),
        "data as a blob": (lambda s: tamper(s, ("UPDATE audit SET data = CAST(data AS BLOB) WHERE seq = 2", [])), 2),
        "prev_hash": (lambda s: tamper(s, ("UPDATE audit SET prev_hash = ? WHERE seq = 3", ["f" * 64])), 3),
        "hash": (lambda s: tamper(s, ("UPDATE audit SET hash = upper(hash) WHERE seq = 3", [])), 3),
        "data with its hash recomputed": (lambda s: tamper(s, ("UPDATE audit SET data = ?, hash = ? WHERE seq = 3", [forged.data, forged.hash])), 4),
        "the first entry deleted": (lambda s: tamper(s, ("DELETE FROM audit WHERE seq = 1", [])), 1),
        "a middle entry deleted": (lambda s: tamper(s, ("DELETE FROM audit WHERE seq = 3", [])), 3),
        "the last entry deleted": (lambda s: tamper(s, ("DELETE FROM audit WHERE seq = 6", [])), 6),
        "a middle entry deleted, the rest renumbered": (
            lambda s: tamper(s, ("DELETE FROM audit WHERE seq = 3", []), ("UPDATE audit SET seq = seq - 1 WHERE seq > 3", [])), 3),
        "two entries swapped": (
            lambda s: tamper(
                s, ("UPDATE audit SET seq = -2 WHERE seq = 2", []), ("UPDATE audit SET seq = 2 WHERE seq = 3", []),
                ("UPDATE audit SET seq = 3 WHERE seq = -2", []),
            ), 2),
        "an entry inserted": (
            lambda s: tamper(
                s, ("UPDATE audit SET seq = seq + 100 WHERE seq >= 3", []), ("UPDATE audit SET seq = seq - 99 WHERE seq >= 103", []),
                (INSERT, [3, e3.ts, "request", "forged", canonical({"n": 0}), e3.prev_hash,
                          Entry.digest(3, e3.ts, "request", "forged", canonical({"n": 0}), e3.prev_hash)]),
            ), 4),
        "an entry appended": (lambda s: tamper(s, (INSERT, [7, 1.0, "request", None, "{}", entries[-1].hash, "0" * 64])), 7),
        "the table emptied": (lambda s: tamper(s, ("DELETE FROM audit", [])), 1),
        "the head file replaced by another entry's": (lambda s: _write_head(head(s), Head(6, entries[4].hash)), 6),
        "the head file replaced by garbage": (lambda s: head(s).write_text("{not a head"), 7),
        "the head file replaced by bytes": (lambda s: head(s).write_bytes(b"\xff\xfe\x00"), 7),
        "the last entry deleted, the head file replaced by garbage": (
            lambda s: (tamper(s, ("DELETE FROM audit WHERE seq = 6", [])), head(s).write_text('{"seq": "x"}')), 6),
    }  # fmt: skip


# The tampers whose verdict is also checked in a real `claude-sidecar` process (each costs a
# second and a half of interpreter start-up; the click command is the same in process).
IN_A_PROCESS = ("kind as a blob", "data not UTF-8", "the head file replaced by bytes", "the last entry deleted, the head file replaced by garbage")


def test_every_single_point_tamper_is_reported_by_the_cli(tmp_path: Path) -> None:
    """`claude-sidecar audit verify` exits 1 and names the first bad entry for every edit of
    every field, deletions at the start, middle and end, a swap, an insert, an emptied table
    and a replaced head file, and says only the entries before it are intact; never a
    traceback. A few in a real process, all through the CLI."""
    entries = chain_of(DATAS, ["start", "request", "request", "policy", "request"])
    entries.append(Entry.make(6, 1_790_000_010.0, "stop", None, {"pid": 1}, entries[-1].hash))
    tampers = _tampers(entries)
    homes: dict[str, Path] = {}
    for i, (name, (attack, _)) in enumerate(tampers.items()):
        homes[name] = tmp_path / f"t{i}"
        attack(make_home(homes[name], entries))
    make_home(tmp_path / "clean", entries)
    verdicts: dict[str, tuple[int, str, str]] = {}
    for name, home in homes.items():
        result = CliRunner().invoke(cli, ["audit", "verify", "--json"], env={"CLAUDE_SIDECAR_HOME": str(home)})
        verdicts[name] = (result.exit_code, result.stdout, repr(result.exception))
    results = cli_procs([(homes[name], ["audit", "verify", "--json"], {}) for name in IN_A_PROCESS] + [(tmp_path / "clean", ["audit", "verify", "--json"], {})])
    *real, control = results
    assert control.returncode == 0 and json.loads(control.stdout)["ok"], control.stderr.decode()
    failures = []
    checks = [(name, *verdicts[name]) for name in tampers]
    checks += [(f"{name} (in a process)", r.returncode, r.stdout.decode(), r.stderr.decode()) for name, r in zip(IN_A_PROCESS, real, strict=True)]
    for name, code, out, err in checks:
        first_bad = tampers[name.removesuffix(" (in a process)")][1]
        try:
            report = json.loads(out)
        except ValueError:
            failures.append(f"{name}: no verdict, exit {code}: {err[-300:]}")
            continue
        if code != 1 or report["ok"] or report["first_bad"] != first_bad:
            failures.append(f"{name}: exit {code}, {report}")
        elif report["entries"] != first_bad - 1:
            failures.append(f"{name}: {report['entries']} entries said intact before #{first_bad}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- a property over random logs

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_FLOAT = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1e-05, 1e16, -0.0, 2.5e-05, 1e-300])
_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _FLOAT | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_DATA = st.dictionaries(_TEXT, _VALUE, max_size=4)
_FIELDS = ("ts", "kind", "request_id", "data", "prev_hash", "hash")


@st.composite
def attacks(draw: st.DrawFn) -> tuple[list[dict[str, Any]], str, int, Any]:
    datas = draw(st.lists(_DATA, min_size=1, max_size=8))
    n = len(datas)
    how = draw(st.sampled_from(["edit", "forge", "delete", "delete+renumber", "swap", "cut", "head"]))
    at = draw(st.integers(1, n))
    extra: Any = None
    if how == "edit":
        extra = (draw(st.sampled_from(_FIELDS)), draw(st.integers(0, 2**32)))
    elif how == "forge":
        extra = draw(_DATA)
    elif how == "swap":
        extra = draw(st.integers(1, n))
    elif how == "head":
        extra = draw(st.sampled_from(["garbage", "other", "beyond"]))
    return datas, how, at, extra


def _apply(store: Path, entries: list[Entry], how: str, at: int, extra: Any) -> int | None:
    """Tamper; return the first entry `verify` must name, or None when it was a no-op."""
    n = len(entries)
    e = entries[at - 1]
    if how == "edit":
        field, salt = extra
        new: Any = {
            "ts": e.ts + 1 + salt % 1000, "kind": f"k{salt}", "request_id": None if e.request_id else f"r{salt}",
            "data": canonical({"salt": salt}), "prev_hash": f"{salt:064x}", "hash": f"{salt:064x}",
        }[field]  # fmt: skip
        if new == getattr(e, field):
            return None
        tamper(store, (f"UPDATE audit SET {field} = ? WHERE seq = ?", [new, at]))
        return at
    if how == "forge":
        forged = _forged(entries, at, extra)
        if forged.hash == e.hash:
            return None
        tamper(store, ("UPDATE audit SET data = ?, hash = ? WHERE seq = ?", [forged.data, forged.hash, at]))
        return at + 1 if at < n else at  # the next link breaks, or (the last entry) the head
    if how == "delete":
        tamper(store, ("DELETE FROM audit WHERE seq = ?", [at]))
        return at
    if how == "delete+renumber":
        tamper(store, ("DELETE FROM audit WHERE seq = ?", [at]), ("UPDATE audit SET seq = seq - 1 WHERE seq > ?", [at]))
        return at
    if how == "swap":
        a, b = sorted((at, extra))
        if entries[a - 1].hash == entries[b - 1].hash or a == b:
            return None
        tamper(store, ("UPDATE audit SET seq = -1 WHERE seq = ?", [a]), ("UPDATE audit SET seq = ? WHERE seq = ?", [a, b]),
            ("UPDATE audit SET seq = ? WHERE seq = -1", [b]))  # fmt: skip
        return a
    if how == "cut":
        tamper(store, ("DELETE FROM audit WHERE seq >= ?", [at]))
        return at
    head = store.parent / HEAD_FILE
    if extra == "garbage":
        head.write_text(json.dumps({"seq": None, "hash": e.hash}))
        return n + 1
    if extra == "other":
        _write_head(head, Head(at, "e" * 64))
        return at
    _write_head(head, Head(n + at, e.hash))
    return n + 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(attacks())
def test_any_single_tamper_of_any_log_is_reported(tmp_path: Path, attack: tuple[list[dict[str, Any]], str, int, Any]) -> None:
    """Random logs (non-ASCII, NUL, floats both encoders spell differently, big integers,
    nesting), one random tamper each: `audit verify` names the entry where the chain first
    goes wrong and says every entry before it is intact; an untouched log verifies."""
    datas, how, at, extra = attack
    entries = chain_of(datas)
    home = tmp_path / "prop"
    store = make_home(home, entries)
    assert verify_in_process(home)[0] == 0
    first_bad = _apply(store, entries, how, at, extra)
    code, report = verify_in_process(home)
    if first_bad is None:
        assert (code, report["ok"]) == (0, True)
        return
    assert (code, report["ok"], report["first_bad"]) == (1, False, first_bad), (how, at, extra, report)
    assert report["entries"] == first_bad - 1, report


# ---------------------------------------------------------------- the head, across a restart


async def _restart(store: Path) -> list[str]:
    """Start and close the log on `store` as the daemon does; the kinds it chained."""
    log = AuditLog(store, store.parent / HEAD_FILE)
    await log.start()
    await log.close()
    db = open_db(store)
    try:
        return [str(r[0]) for r in db.execute("SELECT kind FROM audit ORDER BY seq")]
    finally:
        db.close()


async def test_a_tamper_is_still_reported_after_the_sidecar_restarts(tmp_path: Path) -> None:
    """Entries cut off the end while the sidecar is stopped: the next start chains a
    head_mismatch entry and the chain goes on from the cut (the head file moves with it).
    `verify` must go on reporting the tamper, never "ok" from then on."""
    entries = chain_of(DATAS)
    store = make_home(tmp_path / "cut", entries)
    tamper(store, ("DELETE FROM audit WHERE seq >= 4", []))
    assert (await _restart(store))[3:] == ["head_mismatch"]
    code, report = await asyncio.to_thread(verify_in_process, tmp_path / "cut")
    assert (code, report["ok"], report["first_bad"], report["entries"]) == (1, False, 4, 3), report
    assert "head file" in report["problem"]


async def test_a_head_file_replaced_by_garbage_is_recorded_at_the_next_start(tmp_path: Path) -> None:
    """A garbled head file hides a cut end from `verify` only until the daemon rewrites it:
    the start records it in the chain, where no later head file can hide it."""
    entries = chain_of(DATAS)
    store = make_home(tmp_path / "g", entries)
    tamper(store, ("DELETE FROM audit WHERE seq = 5", []))
    (store.parent / HEAD_FILE).write_text("")
    assert (await _restart(store))[4:] == ["head_mismatch"]
    code, report = await asyncio.to_thread(verify_in_process, tmp_path / "g")
    assert (code, report["ok"], report["first_bad"]) == (1, False, 5), report


async def test_a_lagging_head_is_no_alarm(tmp_path: Path) -> None:
    """The head file moves after the entries are committed: a crash between the two, or a
    head that cannot be written for a while, leaves it behind the table, which is fine."""
    entries = chain_of(DATAS)
    store = make_home(tmp_path / "lag", entries)
    _write_head(store.parent / HEAD_FILE, Head(2, entries[1].hash))
    assert verify_in_process(tmp_path / "lag")[1]["ok"]
    assert (await _restart(store))[5:] == []  # nothing recorded
    assert verify_in_process(tmp_path / "lag")[1]["ok"]


# ---------------------------------------------------------------- exports


def _recompute(line: str) -> str:
    """The hash of an exported line, from the line alone, as chain.py's docstring says."""
    obj = json.loads(line)
    body = json.dumps({k: obj[k] for k in ("seq", "ts", "kind", "request_id", "data")}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{obj['prev_hash']}\n{body}".encode()).hexdigest()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.text(max_size=6), _VALUE | st.text(), max_size=4), min_size=1, max_size=6))
def test_an_export_of_awkward_data_recomputes_from_its_lines_alone(tmp_path: Path, datas: list[dict[str, Any]]) -> None:
    """Entries appended by the log with lone surrogates (undecodable header bytes), NUL,
    non-ASCII, 1e-05 and 1e16: the export's every hash recomputes from its line with
    json.dumps and SHA-256 alone, links to the line before, and `verify --file` passes."""
    home = tmp_path / "exp"
    shutil.rmtree(home, ignore_errors=True)
    (home / "data").mkdir(parents=True)
    store = home / "data" / "sidecar.db"

    async def append() -> None:
        log = AuditLog(store, store.parent / HEAD_FILE)
        await log.start()
        for i, data in enumerate(datas):
            log.append("request", data, f"r{i}\udcff" if i % 2 else f"r{i}")
        await log.close()

    asyncio.run(append())
    out = home / "audit.jsonl"
    env = {"CLAUDE_SIDECAR_HOME": str(home)}
    assert CliRunner().invoke(cli, ["audit", "export", "-o", str(out)], env=env).exit_code == 0
    lines = out.read_text(encoding="utf-8").split("\n")  # JSON lines: not splitlines(), which also splits at U+2028
    assert lines.pop() == "" and len(lines) == len(datas)
    prev = GENESIS
    for line in lines:
        obj = json.loads(line)
        assert (_recompute(line), obj["prev_hash"]) == (obj["hash"], prev)
        prev = obj["hash"]
    result = CliRunner().invoke(cli, ["audit", "verify", "--file", str(out), "--json"], env=env)
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"], result.output


def test_an_export_to_stdout_in_any_locale_verifies(tmp_path: Path) -> None:
    """`audit export > file` where standard output is not UTF-8 (a redirect on Windows is
    cp1252; here latin-1 and ASCII): the file is still an export `verify --file` passes."""
    entries = chain_of(DATAS)
    make_home(tmp_path / "loc", entries)
    runs = [(tmp_path / "loc", ["audit", "export"], {"PYTHONIOENCODING": enc}) for enc in ("latin-1", "ascii")]
    results = cli_procs(runs)
    for enc, result in zip(("latin-1", "ascii"), results, strict=True):
        assert result.returncode == 0, (enc, result.stderr.decode()[-400:])
        out = tmp_path / f"export-{enc}.jsonl"
        out.write_bytes(result.stdout)
        assert [json.loads(line)["hash"] for line in result.stdout.decode("utf-8").split("\n")[:-1]] == [e.hash for e in entries]
        report = CliRunner().invoke(cli, ["audit", "verify", "--file", str(out), "--json"], env={"CLAUDE_SIDECAR_HOME": str(tmp_path / "loc")})
        assert report.exit_code == 0, (enc, report.output)


def test_an_edited_export_is_reported_never_a_traceback(tmp_path: Path) -> None:
    """An exported file is checked line by line: a byte that is not UTF-8, a readable `time`
    that no longer says what `ts` says (it is not hashed), a field added to a line, a key
    given twice (the hash covers one of the two values; a reader may show the other), or
    JSON nested past any decoder's depth are reported as a bad line, with exit 1."""
    entries = chain_of(DATAS)
    make_home(tmp_path / "ed", entries)
    env = {"CLAUDE_SIDECAR_HOME": str(tmp_path / "ed")}
    out = tmp_path / "export.jsonl"
    assert CliRunner().invoke(cli, ["audit", "export", "-o", str(out)], env=env).exit_code == 0
    raw = out.read_bytes()
    lines = raw.splitlines(keepends=True)
    time_edited = json.loads(lines[2])
    time_edited["time"] = "2019-01-01T00:00:00.000+00:00"
    added = {**json.loads(lines[1]), "approved_by": "the CFO"}
    variants = {
        "not UTF-8": b"".join([*lines[:1], lines[1].replace("é".encode(), b"\xe9"), *lines[2:]]),
        "a field added": b"".join([lines[0], json.dumps(added, ensure_ascii=False).encode() + b"\n", *lines[2:]]),
        "a key twice in data": b"".join([*lines[:2], lines[2].replace(b'"data":{', b'"data":{"n":99,', 1), *lines[3:]]),
        "a key twice in the entry": b"".join([*lines[:2], lines[2].replace(b'"kind":"request"', b'"kind":"policy","kind":"request"', 1), *lines[3:]]),
        "time edited": b"".join([*lines[:2], json.dumps(time_edited, ensure_ascii=False).encode() + b"\n", *lines[3:]]),
        "nested too deeply": b"".join([*lines[:3], b"[" * 100_000 + b"]" * 100_000 + b"\n", *lines[4:]]),
    }
    line_of = {"not UTF-8": 2, "a field added": 2, "a key twice in data": 3, "a key twice in the entry": 3, "time edited": 3, "nested too deeply": 4}
    for name, content in variants.items():
        out.write_bytes(content)
        result = CliRunner().invoke(cli, ["audit", "verify", "--file", str(out), "--json"], env=env)
        assert result.exit_code == 1 and result.exception is not None and isinstance(result.exception, SystemExit), (name, result.output)
        report = json.loads(result.stdout)
        assert not report["ok"] and report["problem"].startswith(f"line {line_of[name]} of "), (name, report)


# ---------------------------------------------------------------- a real daemon

READER = r"""
import json, subprocess, sys, time
from pathlib import Path
stop, out = Path(sys.argv[1]), Path(sys.argv[2])
tmp = out.with_suffix(".export.jsonl")
notes = {"verify": 0, "export": 0, "problems": [], "slowest": 0.0}
while not stop.exists():
    for args in (["audit", "verify", "--json"], ["audit", "export", "-o", str(tmp)]):
        t = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "sidecar", *args], capture_output=True, timeout=60)
        notes["slowest"] = max(notes["slowest"], time.monotonic() - t)
        if r.returncode != 0 and b"no audit log yet" not in r.stderr:
            notes["problems"].append({"args": args, "rc": r.returncode, "out": r.stdout.decode()[-300:], "err": r.stderr.decode()[-500:]})
        elif args[1] == "export":
            v = subprocess.run([sys.executable, "-m", "sidecar", "audit", "verify", "--file", str(tmp)], capture_output=True, timeout=60)
            if v.returncode != 0:
                notes["problems"].append({"args": "verify --file", "err": v.stderr.decode()[-500:]})
            notes["export"] += 1
        else:
            notes["verify"] += 1
out.write_text(json.dumps(notes))
"""


async def _load(url: str, stop: asyncio.Event, latencies: list[float]) -> None:
    body = {"model": "claude-opus-4-8", "max_tokens": 16, "messages": [{"role": "user", "content": "é🙂 hello"}]}
    async with aiohttp.ClientSession() as client:

        async def worker(k: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                t = time.monotonic()
                try:
                    async with client.post(url + "/v1/messages", json={**body, "stream": (n + k) % 2 == 0}) as resp:
                        await resp.read()
                except (aiohttp.ClientError, ConnectionError):
                    return  # killed
                latencies.append(time.monotonic() - t)

        await asyncio.gather(*(worker(k) for k in range(4)))


async def test_a_crash_reads_as_a_crash_and_a_tamper_never_does(hermetic_env: Path, tmp_path: Path) -> None:
    """A real daemon under load, with `audit verify` and `audit export` (then `verify --file`)
    looping in other processes: no false alarm, no crash, no stalled request. SIGKILLed, it
    restarts and verify reports one unclean shutdown (ok). Stopped cleanly, its end cut off
    by an attacker, restarted: verify reports the tamper, not a second crash."""
    home = hermetic_env
    async with FakeAnthropic(default=Text("one two three", delay_between_events=0.001)) as fake:
        config = anthropic_config(fake.url)
        child = await asyncio.to_thread(start_child, home, config)
        stop_file, notes_file = tmp_path / "stop", tmp_path / "notes.json"
        reader = await asyncio.create_subprocess_exec(sys.executable, "-c", READER, str(stop_file), str(notes_file), env=child_env(home), cwd=ROOT)
        try:
            stop, latencies = asyncio.Event(), []
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_load(child.url, stop, latencies))
                await asyncio.sleep(4)
                child.proc.kill()
                await asyncio.to_thread(child.proc.wait)
                stop.set()
            stop_file.touch()
            async with asyncio.timeout(60):
                await reader.wait()
        finally:
            stop_file.touch()
            if reader.returncode is None:
                reader.kill()
                await reader.wait()
            child.proc.kill()
        notes = json.loads(notes_file.read_text())
        assert notes["problems"] == [] and notes["verify"] >= 1 and notes["export"] >= 1, notes
        assert len(latencies) > 50 and max(latencies) < 2.5, (len(latencies), max(latencies, default=None))

        child = await asyncio.to_thread(start_child, home, config)
        assert await asyncio.to_thread(child.stop) == 0
        [crashed] = await asyncio.to_thread(cli_procs, [(home, ["audit", "verify", "--json"], {})])
        report = json.loads(crashed.stdout)
        assert (crashed.returncode, report["ok"], report["unclean_shutdowns"]) == (0, True, 1), report

        # The attacker: the last two entries (the stop and the start before it) cut off.
        last = report["last"]["seq"]
        tamper(home / "data" / "sidecar.db", ("DELETE FROM audit WHERE seq >= ?", [last - 1]))
        child = await asyncio.to_thread(start_child, home, config)
        assert await asyncio.to_thread(child.stop) == 0
    [tampered] = await asyncio.to_thread(cli_procs, [(home, ["audit", "verify", "--json"], {})])
    report = json.loads(tampered.stdout)
    assert (tampered.returncode, report["ok"], report["first_bad"]) == (1, False, last - 1), report


# ---------------------------------------------------------------- the disk


async def test_a_head_file_that_turns_unwritable_mid_run_is_no_alarm(tmp_path: Path) -> None:
    """The head file's directory entry cannot be replaced for a while (its temporary name is
    taken by a directory): entries go on being written, the head lags, verify stays ok; once
    it can be written again, it catches up."""
    home = tmp_path / "ro"
    (home / "data").mkdir(parents=True)
    store = home / "data" / "sidecar.db"
    log = AuditLog(store, store.parent / HEAD_FILE)
    await log.start()
    for i in range(3):
        log.append("request", {"n": i})
    await log.flush()
    blocker = store.parent / (HEAD_FILE + ".tmp")
    blocker.mkdir()
    for i in range(3, 6):
        log.append("request", {"n": i})
    async with asyncio.timeout(5):
        await log.flush()
    code, report = await asyncio.to_thread(verify_in_process, home)
    assert (code, report["ok"], report["last"]["seq"]) == (0, True, 6), report
    blocker.rmdir()
    log.append("stop", {"pid": 1})
    await log.close()
    code, report = await asyncio.to_thread(verify_in_process, home)
    assert (code, report["ok"]) == (0, True) and json.loads((store.parent / HEAD_FILE).read_text())["seq"] == 7


async def test_every_request_is_chained_with_content_logging_whatever_its_body(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Content logging on: bodies nested near the JSON decoders' depth limit (answered, or
    refused with a 400) and a 2 MB prompt with NUL and non-ASCII each get their entry; the
    chain verifies, and its export recomputes from its lines alone and passes `verify --file`."""
    fake.default = Text("ok \x00 é")
    head = b'{"model":"claude-opus-4-8","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"metadata":{"x":'
    bodies = [head + b"[" * d + b"]" * d + b"}}" for d in (10, 930, 945, 965, 2000)]
    bodies.append(json.dumps({"model": "claude-opus-4-8", "max_tokens": 10, "stream": True,
                              "messages": [{"role": "user", "content": "é\x00🙂 " * 300_000}]}).encode())  # fmt: skip
    statuses = []
    async with governed(fake.url, hermetic_env, "[policy]\nlog_content = true\n") as sc:
        for i, raw in enumerate(bodies):
            headers = {"x-api-key": "k", "content-type": "application/json", "x-claude-code-session-id": f"s{i}"}
            async with client.post(sc.url + "/v1/messages", data=io.BytesIO(raw), headers=headers) as resp:
                await resp.read()
                statuses.append(resp.status)
    assert statuses[:2] == [200, 200] and statuses[-1] == 200, statuses
    entries = audit_entries(hermetic_env)  # verifies the chain
    requests = [e for e in entries if e["kind"] == "request"]
    assert len(requests) == len(bodies), [e["kind"] for e in entries]
    assert [e["status"] for e in requests] == statuses
    assert requests[-1]["content"]["request"]["messages"][0]["content"].startswith("é\x00🙂")
    env = {"CLAUDE_SIDECAR_HOME": str(hermetic_env)}
    code, report = await asyncio.to_thread(verify_in_process, hermetic_env)
    assert (code, report["ok"]) == (0, True), report
    out = tmp_path / "content.jsonl"
    assert CliRunner().invoke(cli, ["audit", "export", "-o", str(out)], env=env).exit_code == 0
    lines = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert [_recompute(line) for line in lines] == [json.loads(line)["hash"] for line in lines]
    assert CliRunner().invoke(cli, ["audit", "verify", "--file", str(out)], env=env).exit_code == 0
