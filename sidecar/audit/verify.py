"""Checking an audit chain: every edit, deletion or reordering shows, and the first bad
entry is named.

- an edited entry no longer matches its own hash (or its data is no longer canonical);
- a deleted entry leaves a hole in `seq`, and the next entry's `prev_hash` points at it;
- a moved entry is out of `seq` order and breaks the links on both sides;
- entries cut off the end leave the chain intact, but not the head file written beside
  the store after every batch (an exported file has no head: its end cannot be checked).

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
from sidecar.audit.log import Head


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
            if head is not None and e.seq == head.seq:
                at_head = e.hash
            unclean += e.kind == "unclean_shutdown"
            prev, expected = e.hash, e.seq + 1
    except BadLine as bad:
        return Report(False, count, expected, str(bad))
    last = Head(expected - 1, prev) if expected > 1 else None
    if head is not None:
        if head.seq > expected - 1:
            return Report(
                False, count, expected,
                f"entries #{expected} to #{head.seq} are missing from the end: the head file records #{head.seq}, "
                f"but the log ends at #{expected - 1} (it was cut short)",
                last,
            )  # fmt: skip
        if at_head != head.hash:
            return Report(False, count, head.seq, f"entry #{head.seq} is not the one the head file recorded: it was rewritten", last)
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
    except ValueError:
        return e.seq, f"entry #{e.seq}: its data is not valid JSON (edited)"
    if canonical(data) != e.data:
        return e.seq, f"entry #{e.seq}: its data is not in canonical form (edited)"
    if Entry.digest(e.seq, e.ts, e.kind, e.request_id, e.data, e.prev_hash) != e.hash:
        return e.seq, f"entry #{e.seq}: its contents do not match its hash (edited)"
    return e.seq, ""


def entries_in_db(db: sqlite_utils.Database) -> Iterator[Entry]:
    """The table's entries in `seq` order."""
    if not db["audit"].exists():
        return
    for row in db.execute("SELECT seq, ts, kind, request_id, data, prev_hash, hash FROM audit ORDER BY seq"):
        yield Entry(*row)


def entries_in_file(path: Path) -> Iterator[Entry]:
    """The entries of an exported JSONL file, in file order (a bad line raises BadLine)."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield Entry.from_json(json.loads(line))
            except ValueError as e:
                raise BadLine(f"line {n} of {path} is not an audit entry: {e}") from None
