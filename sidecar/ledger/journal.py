"""The write-ahead journal: a request's usage row and audit entry are on disk before the
last byte of its answer reaches the client.

The ledger and the audit log write to sqlite in batches (a transaction per request costs
more than the proxying), so a batch still waiting when the process dies would be lost. Each
record is therefore also added here, and `sync()` appends what a request added in one
`os.write`, on the event loop, just before the answer's final byte goes out (the request
path calls it through the last stage, `JournalSync`). The bytes are then in the OS's page
cache and survive the death of the process (SIGKILL, OOM, a crash); an OS crash is out of
scope, as with sqlite's `synchronous = NORMAL`. At the next start `recover()` moves what the
journal holds into sqlite, idempotently (usage rows by id, audit entries by seq continuing
the chain), and deletes it.

The journal is a directory of numbered segment files. The current one is rotated once it
holds SEGMENT_BYTES; a rotated segment is deleted as soon as every record written to it is
committed to sqlite (`release()`), so under constant load it holds about one segment.

A line is a JSON array: ``["u", <the usage columns in writer order>]``,
``["a", seq, ts, kind, request_id, data, prev_hash, hash]`` (a chained audit entry), or
``["p", seq, ts, kind, request_id, data]``: an audit entry's pre-image, journaled before the
answer and chained after it (sidecar.audit.log.AuditLog.hold); recovery chains it, with the
hash the running process would have given it.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import sqlite_utils

from sidecar.audit.chain import Entry
from sidecar.ledger.record import INSERT_USAGE, USAGE_COLUMNS
from sidecar.ledger.store import open_db

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"  # beside the store, in the data dir
SEGMENT_BYTES = 1 << 20
SUFFIX = ".journal"
USAGE, AUDIT, PRE_IMAGE = "u", "a", "p"
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[Any]).decode


@dataclass
class Recovered:
    """What `recover()` found in the journal of a previous run."""

    segments: int = 0
    usage: int = 0  # usage rows inserted now (not yet in sqlite when the process died)
    audit: int = 0  # audit entries appended now
    bad_lines: int = 0  # lines that were not records (torn by a failed write)
    audit_dropped: int = 0  # audit entries that could not continue the chain (a gap before them)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for the audit's `unclean_shutdown` entry and the log)."""
        return {
            "segments": self.segments,
            "usage": self.usage,
            "audit": self.audit,
            "bad_lines": self.bad_lines,
            "audit_dropped": self.audit_dropped,
        }


class Journal:
    """Append-only segments of usage rows and audit entries not yet committed to sqlite.

    `add()`, `sync()` and `release()` run on the event loop's thread, never concurrently.
    `sync()` never raises: a failed write sets `error` (the storage is degraded) and the
    records stay in the writers' memory queues, which keep retrying sqlite.
    """

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.error: str | None = None  # the last write's failure, until a write succeeds
        self.failed_writes = 0
        self._seg = 1
        self._fd: int | None = None
        self._size = 0
        self._buf: list[bytes] = []
        self._open: dict[int, int] = {}  # segment -> records written to it, not yet committed
        self._closed = False

    # ------------------------------------------------------------------ start

    def recover(self, db_file: Path) -> Recovered:
        """Move the records a previous run left in the journal into the store at `db_file`,
        delete the segments, and start a new one. Runs before any record is added (in a
        worker thread); raises OSError or sqlite3.Error when the store cannot be written."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        segments = sorted(self._segments())
        found = Recovered(segments=len(segments))
        if not os.access(self.directory, os.W_OK):
            raise PermissionError(errno.EACCES, "the journal directory is not writable", str(self.directory))
        if segments:
            db = open_db(db_file)
            try:
                self._load(db, segments, found)
            finally:
                db.close()
            if found.usage or found.audit or found.bad_lines or found.audit_dropped:
                log.warning("recovered from the journal of an unclean shutdown: %s", found.to_dict())
            for _, path in segments:
                path.unlink()
        self._seg = max((n for n, _ in segments), default=0) + 1
        return found

    def _load(self, db: sqlite_utils.Database, segments: list[tuple[int, Path]], found: Recovered) -> None:
        """Read the segments' records, in order, and replay them into `db`."""
        usage: list[Sequence[Any]] = []
        audit: list[Sequence[Any]] = []
        for _, path in segments:
            for line in path.read_bytes().split(b"\n"):
                if not line.strip():
                    continue
                try:
                    rec = _decode(line)
                except msgspec.DecodeError:
                    found.bad_lines += 1
                    continue
                if rec[:1] == [USAGE]:
                    usage.append(rec[1:])
                elif rec[:1] == [AUDIT] or rec[:1] == [PRE_IMAGE]:
                    audit.append(rec)
                else:
                    found.bad_lines += 1
        _replay(db, usage, audit, found)

    def _segments(self) -> Iterable[tuple[int, Path]]:
        for path in self.directory.iterdir():
            if path.suffix == SUFFIX and path.stem.isdigit():
                yield int(path.stem), path

    def _path(self, seg: int) -> Path:
        return self.directory / f"{seg:08d}{SUFFIX}"

    # ------------------------------------------------------------------ the request path

    def add(self, line: bytes) -> int:
        """Buffer one record (a JSON line) for the next `sync()`; returns the segment it goes
        to, which the writer hands back to `release()` once the record is in sqlite."""
        self._buf.append(line)
        self._open[self._seg] = self._open.get(self._seg, 0) + 1
        return self._seg

    def sync(self) -> None:
        """Append everything added since the last sync in one write; never raises. While
        degraded, an empty sync writes a blank line to learn whether the disk is back."""
        if self._closed:
            self._buf.clear()
            return
        if self._buf:
            data = b"".join(self._buf)
            self._buf.clear()
        elif self.error is not None:
            data = b"\n"
        else:
            return
        try:
            if self._fd is None:
                self._fd = os.open(self._path(self._seg), _FLAGS, 0o600)
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        except OSError as e:
            self._failed(e)
            return
        if self.error is not None:
            log.warning("the usage journal is writable again")
            self.error = None
        self._size += written
        if self._size >= self.segment_bytes:
            self._rotate()

    def _failed(self, e: OSError) -> None:
        self.failed_writes += 1
        if self.error is None:
            log.error("cannot write the usage journal in %s: %s", self.directory, e)
        self.error = f"journal: {e.strerror or e}"
        self._rotate()  # never append after a torn line

    def _rotate(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass
        old, self._seg, self._size = self._seg, self._seg + 1, 0
        if not self._open.get(old):
            self._open.pop(old, None)
            self._unlink(old)

    def release(self, segments: Iterable[int]) -> None:
        """These records (one segment number each) are committed to sqlite: a rotated segment
        whose records are all committed is deleted."""
        for seg in segments:
            left = self._open.get(seg, 0) - 1
            if left > 0:
                self._open[seg] = left
                continue
            self._open.pop(seg, None)
            if seg != self._seg:
                self._unlink(seg)

    def _unlink(self, seg: int) -> None:
        try:
            self._path(seg).unlink(missing_ok=True)
        except OSError as e:
            log.warning("cannot delete journal segment %s: %s", self._path(seg), e)

    @property
    def segments_open(self) -> int:
        """Segments on disk that still hold records not yet committed."""
        return len(self._open)

    def close(self) -> None:
        """Stop writing. The current segment is deleted when everything in it is committed;
        otherwise it stays for the next start to recover."""
        if self._closed:
            return
        self.sync()
        self._closed = True
        old = self._seg
        self._rotate()
        if self._open.get(old):
            log.warning("leaving %d uncommitted records in the journal for the next start", self._open[old])


def usage_line(values: Sequence[Any]) -> bytes:
    """The journal line of a usage row (its column values in writer order)."""
    return _encode([USAGE, *values]) + b"\n"


def audit_line(seq: int, ts: float, kind: str, request_id: str | None, data: str, prev_hash: str, digest: str) -> bytes:
    """The journal line of an audit entry."""
    return _encode([AUDIT, seq, ts, kind, request_id, data, prev_hash, digest]) + b"\n"


def pre_image_line(seq: int, ts: float, kind: str, request_id: str | None, data: dict[str, Any]) -> bytes:
    """The journal line of an audit entry not chained yet (raises msgspec.EncodeError or
    UnicodeEncodeError for data it cannot carry, e.g. a lone surrogate)."""
    return _encode([PRE_IMAGE, seq, ts, kind, request_id, data]) + b"\n"


def _replay(db: sqlite_utils.Database, usage: list[Sequence[Any]], audit: list[Sequence[Any]], found: Recovered) -> None:
    """Insert the journal's records that sqlite does not hold yet, in one transaction."""
    width = len(USAGE_COLUMNS)
    with db.atomic():
        for row in usage:
            try:
                if len(row) != width:
                    raise ValueError(f"{len(row)} values, not {width}")
                # rowcount, not total_changes: that also counts the outbox trigger's inserts.
                found.usage += db.conn.execute(INSERT_USAGE, row).rowcount
            except sqlite3.OperationalError:
                raise  # the store, not the row: recovery fails and the journal stays
            except Exception as e:
                found.bad_lines += 1
                log.error("a journaled usage record cannot be stored (%s); dropped", e)
        if audit and db["audit"].exists():
            _replay_audit(db, audit, found)


def _replay_audit(db: sqlite_utils.Database, audit: list[Sequence[Any]], found: Recovered) -> None:
    """Append the entries that continue the chain from the table's newest one."""
    row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    last_seq, last_hash = (0, "0" * 64) if row is None else (int(row[0]), str(row[1]))
    for line in audit:
        entry = _entry(line, last_seq, last_hash, found)
        if entry is None:
            continue
        db.conn.execute(
            "INSERT INTO audit (seq, ts, kind, request_id, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (entry.seq, entry.ts, entry.kind, entry.request_id, entry.data, entry.prev_hash, entry.hash),
        )
        last_seq, last_hash = entry.seq, entry.hash
        found.audit += 1
    if found.audit_dropped:
        found.notes.append(f"{found.audit_dropped} audit entries after #{last_seq} could not be chained (a write had failed before them)")


def _entry(line: Sequence[Any], last_seq: int, last_hash: str, found: Recovered) -> Entry | None:
    """The entry a journal line gives after entry `last_seq` (hash `last_hash`): a chained
    one as it was written, a pre-image chained now; None (counted) when it is not the next."""
    rec = line[1:]
    if line[0] == AUDIT:
        ok = len(rec) == 7 and all(isinstance(v, str) for v in (rec[2], rec[4], rec[5], rec[6]))
    else:
        ok = len(rec) == 5 and isinstance(rec[2], str) and isinstance(rec[4], dict)
    if not ok or type(rec[0]) is not int or type(rec[1]) not in (int, float) or not isinstance(rec[3], str | None):
        found.bad_lines += 1
        return None
    seq = rec[0]
    if seq <= last_seq:
        return None  # committed before the process died
    if seq != last_seq + 1 or (line[0] == AUDIT and rec[5] != last_hash):
        found.audit_dropped += 1
        return None
    if line[0] == AUDIT:
        return Entry(seq, rec[1], rec[2], rec[3], rec[4], rec[5], rec[6])
    try:
        return Entry.make(seq, rec[1], rec[2], rec[3], rec[4], last_hash)  # as AuditLog.settle() chains it
    except (UnicodeError, TypeError, ValueError):  # not data the running process could have held
        found.bad_lines += 1
        return None
