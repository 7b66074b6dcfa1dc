"""Checking an audit chain: every edit, deletion or reordering shows, and the first bad
entry is named.

- an edited entry no longer matches its own hash (or its data is no longer canonical);
- a deleted entry leaves a hole in `seq`, and the next entry's `prev_hash` points at it;
- a moved entry is out of `seq` order and breaks the links on both sides;
- entries cut off the end leave the chain intact, but not the head file written beside
  the store after every batch (an exported file has no head: its end cannot be checked);
  a head file that is not one the sidecar wrote is reported too, and a sidecar that starts
  on a log whose head file no longer matches chains a `head_mismatch` entry, which fails
  every later `verify` (the chain goes on from the cut, so nothing else would show it).

A crash is not tampering: the sidecar recovers the entries it had journaled and chains an
`unclean_shutdown` entry at its next start; `verify` counts those (`unclean_shutdowns`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from sidecar.audit.chain import GENESIS, Entry, canonical
from sidecar.audit.log import UNREADABLE, Head


class BadLine(ValueError):
    """A line of an exported file that is not an audit entry."""


@dataclass
class Report:
    """The verdict on a chain."""

    ok: bool
    entries: int
    first_bad: int | None = None  # the seq of the first bad entry
    problem: str = ""
    last: Head | None = None
    unclean_shutdowns: int = 0  # crashes the chain records (entries of kind unclean_shutdown)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for `--json`."""
        return {
            "ok": self.ok,
            "entries": self.entries,
            "first_bad": self.first_bad,
            "problem": self.problem or None,
            "last": None if self.last is None else {"seq": self.last.seq, "hash": self.last.hash},
            "unclean_shutdowns": self.unclean_shutdowns,
        }


def verify(entries: Iterable[Entry], head: Head | None = None, *, from_start: bool = True) -> Report:
    """Walk `entries` in order; stop at the first problem. With `from_start` the chain must
    begin at #1; without (a partial export), it is checked from its first entry on."""
    prev = GENESIS
    expected = 1
    at_head: str | None = None
    count = 0
    unclean = 0
    try:
        for e in entries:
            if count == 0 and not from_start:
                prev, expected = e.prev_hash, e.seq
            count += 1
            bad, problem = _problem(e, expected, prev)
            if problem:
                return Report(False, count - 1, bad, problem)
            if e.kind == "head_mismatch":
                return Report(
                    False, count - 1, e.seq,
                    f"entry #{e.seq} records that the sidecar started on a log without the entry its head file named: "
                    "entries were cut off the end or rewritten while it was stopped",
                )  # fmt: skip
            if head is not None and e.seq == head.seq:
                at_head = e.hash
            unclean += e.kind == "unclean_shutdown"
            prev, expected = e.hash, e.seq + 1
    except BadLine as bad:
        return Report(False, count, expected, str(bad))
    last = Head(expected - 1, prev) if expected > 1 else None
    if head == UNREADABLE:
        return Report(
            False, count, expected,
            f"the head file is not one the sidecar wrote (edited or replaced): entries cut off after #{expected - 1} would not show",
            last,
        )  # fmt: skip
    if head is not None:
        if head.seq > expected - 1:
            return Report(
                False, count, expected,
                f"entries #{expected} to #{head.seq} are missing from the end: the head file records #{head.seq}, "
                f"but the log ends at #{expected - 1} (it was cut short)",
                last,
            )  # fmt: skip
        if at_head != head.hash:
            return Report(False, head.seq - 1, head.seq, f"entry #{head.seq} is not the one the head file recorded: it was rewritten", last)
    return Report(True, count, last=last, unclean_shutdowns=unclean)


def _problem(e: Entry, expected: int, prev: str) -> tuple[int, str]:
    """The first bad seq and what is wrong with `e` at this point of the chain ("" if nothing)."""
    if e.seq > expected:
        gone = f"#{expected}" if e.seq == expected + 1 else f"#{expected} to #{e.seq - 1}"
        return expected, f"entry {gone} is missing: the log jumps from #{expected - 1} to #{e.seq} (deleted or moved)"
    if e.seq < expected:
        return e.seq, f"entry #{e.seq} appears after #{expected - 1}: entries were reordered or duplicated"
    if e.prev_hash != prev:
        return e.seq, (
            f"entry #{e.seq} does not link to the entry before it (prev_hash differs): "
            "an earlier entry was rewritten, removed or moved"
        )
    try:
        data = json.loads(e.data)
    except (ValueError, TypeError, RecursionError):
        return e.seq, f"entry #{e.seq}: its data is not valid JSON (edited)"
    try:
        if canonical(data) != e.data:
            return e.seq, f"entry #{e.seq}: its data is not in canonical form (edited)"
        digest = Entry.digest(e.seq, e.ts, e.kind, e.request_id, e.data, e.prev_hash)
    except (ValueError, TypeError, RecursionError):  # a blob, or text that is not UTF-8, where text was
        return e.seq, f"entry #{e.seq}: a field holds what no entry can (edited)"
    if digest != e.hash:
        return e.seq, f"entry #{e.seq}: its contents do not match its hash (edited)"
    return e.seq, ""


def entries_in_db(db: sqlite_utils.Database) -> Iterator[Entry]:
    """The table's entries in `seq` order. Text that is not UTF-8 (only an edit puts it
    there) is read with its bad bytes as lone surrogates, for `verify` to report."""
    if not db["audit"].exists():
        return
    conn = db.conn
    factory, conn.text_factory = conn.text_factory, _lenient
    try:
        for row in conn.execute("SELECT seq, ts, kind, request_id, data, prev_hash, hash FROM audit ORDER BY seq"):
            yield Entry(*row)
    finally:
        conn.text_factory = factory


def _lenient(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def entries_in_file(path: Path) -> Iterator[Entry]:
    """The entries of an exported JSONL file, in file order (a bad line raises BadLine)."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")  # per line: a bad byte names its line
                entry = _exported(json.loads(line, object_pairs_hook=_unique)) if line.strip() else None
            except (ValueError, RecursionError) as e:
                raise BadLine(f"line {n} of {path} is not an audit entry: {e}") from None
            if entry is not None:
                yield entry


_EXPORTED = frozenset(("seq", "ts", "time", "kind", "request_id", "data", "prev_hash", "hash"))  # Entry.to_json


def _exported(obj: Any) -> Entry:
    """An entry from an exported line, which holds nothing the hash does not cover but `time`
    (checked against `ts`): a field added to a line would read as part of the entry."""
    if isinstance(obj, dict) and not _EXPORTED.issuperset(obj):
        raise ValueError(f"it has fields no entry has: {sorted(set(obj) - _EXPORTED)}")
    return Entry.from_json(obj)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: with a key twice, a reader that keeps the
    first would see what the hash (over the last) does not cover."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return obj
