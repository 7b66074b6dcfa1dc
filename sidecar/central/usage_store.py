"""Usage ingestion (idempotent by ULID) and the admin usage reports.

A batch is inserted with one ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id``: the
ids it returns were new; every other id already existed, and is a duplicate when its stored
content hash equals the posted one, else a conflict (refused and reported). On PostgreSQL a
concurrent insert of the same id waits for the first transaction and then does nothing, so
the same batch posted concurrently still counts once; rows go in in id order, so batches
that overlap in another order lock their rows in one order and cannot deadlock. An id
repeated within a batch keeps its first content (other content there is a conflict).
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from sidecar.central.db import Row
from sidecar.central.people_store import BaseStore, Device
from sidecar.errors import InvalidRequest

MAX_BATCH = 1000
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
INT_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
TEXT_FIELDS = ("route", "provider")
REPORT_BY = {
    "developer": ("p.email", "LEFT JOIN developers p ON p.id = u.developer_id"),
    "team": ("COALESCE(t.name, '(no team)')", "LEFT JOIN teams t ON t.id = u.team_id"),
    "model": ("u.model", ""),
    "route": ("COALESCE(u.route, '(none)')", ""),
    "day": ("u.day", ""),
}
_COLUMNS = ("id", "content_hash", "device_id", "developer_id", "team_id", "ts", "day", "model", "route", "provider",
            *INT_FIELDS, "cost_usd", "received_at")  # fmt: skip


def _record(i: int, raw: Any) -> dict[str, Any]:
    """One validated record (only the fields the server keeps)."""
    where = f"records[{i}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be an object")
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ULID.match(rid):
        raise InvalidRequest(f"{where}.id must be a ULID (26 Crockford base32 characters)")
    ts = raw.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not 0 < ts < 1e11:
        raise InvalidRequest(f"{where}.ts must be UTC epoch seconds")
    model = raw.get("model")
    if not isinstance(model, str) or not model or len(model) > 200:
        raise InvalidRequest(f"{where}.model must be a non-empty string")
    rec: dict[str, Any] = {"id": rid, "ts": float(ts), "model": model}
    for f in INT_FIELDS:
        v = raw.get(f, 0)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**53:
            raise InvalidRequest(f"{where}.{f} must be a non-negative integer")
        rec[f] = v
    cost = raw.get("cost_usd", 0.0)
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < 1e9:
        raise InvalidRequest(f"{where}.cost_usd must be a non-negative number")
    rec["cost_usd"] = float(cost)
    for f in TEXT_FIELDS:
        v = raw.get(f)
        if v is not None and (not isinstance(v, str) or len(v) > 200):
            raise InvalidRequest(f"{where}.{f} must be a string")
        rec[f] = v
    return rec


def content_hash(rec: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON (what a reused id is compared by): sorted keys,
    no spaces, UTF-8, the same bytes as `sidecar.audit.chain.canonical`, made by msgspec
    because ingestion hashes every record."""
    return hashlib.sha256(_encode(rec)).hexdigest()


_encode = msgspec.json.Encoder(order="sorted").encode


@functools.lru_cache(maxsize=4096)
def _utc_day(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86400, UTC).strftime("%Y-%m-%d")


class UsageStore(BaseStore):
    """Usage records and reports."""

    async def ingest(self, device: Device, records: Any) -> dict[str, Any]:
        """Insert a batch idempotently; say how many were new, duplicates and conflicts."""
        if not isinstance(records, list):
            raise InvalidRequest("records must be a list")
        if len(records) > MAX_BATCH:
            raise InvalidRequest(f"at most {MAX_BATCH} records per batch")
        recs = [_record(i, r) for i, r in enumerate(records)]
        by_id: dict[str, tuple[dict[str, Any], str]] = {}
        conflicts: list[str] = []
        for r in recs:
            h = content_hash(r)
            seen = by_id.get(r["id"])
            if seen is None:
                by_id[r["id"]] = (r, h)
            elif seen[1] != h and r["id"] not in conflicts:  # the first content is the one kept
                conflicts.append(r["id"])
        if not by_id:
            return {"accepted": 0, "duplicates": 0, "conflicts": []}
        now = time.time()
        rows = []
        for _id, (r, h) in sorted(by_id.items()):
            day = _utc_day(int(r["ts"] // 86400))
            rows.append((r["id"], h, device.id, device.developer_id, device.team_id, r["ts"], day, r["model"], r["route"],
                         r["provider"], *(r[f] for f in INT_FIELDS), r["cost_usd"], now))  # fmt: skip
        one = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
        sql = (f"INSERT INTO usage ({', '.join(_COLUMNS)}) VALUES {', '.join([one] * len(rows))}"
               " ON CONFLICT (id) DO NOTHING RETURNING id")  # fmt: skip
        async with self.db.tx() as tx:
            inserted = {r["id"] for r in await tx.fetch(sql, *(v for row in rows for v in row))}
            rest = [i for i in by_id if i not in inserted]
            stored: dict[str, str] = {}
            for start in range(0, len(rest), 500):
                part = rest[start : start + 500]
                marks = ", ".join("?" * len(part))
                for row in await tx.fetch(f"SELECT id, content_hash FROM usage WHERE id IN ({marks})", *part):
                    stored[row["id"]] = row["content_hash"]
        for i in rest:
            if stored.get(i) != by_id[i][1] and i not in conflicts:
                conflicts.append(i)
        duplicates = len(rest) - len([i for i in rest if i in conflicts])
        return {"accepted": len(inserted), "duplicates": duplicates, "conflicts": sorted(conflicts)}

    async def usage_report(self, by: str, since: str | None = None, until: str | None = None) -> list[Row]:
        """Totals grouped `by` developer, team, model, route or day, for UTC days since..until."""
        if by not in REPORT_BY:
            raise InvalidRequest(f"by must be one of {', '.join(REPORT_BY)}")
        for name, d in (("since", since), ("until", until)):
            if d is not None and not re.match(r"^\d{4}-\d{2}-\d{2}$", d):
                raise InvalidRequest(f"{name} must be a date YYYY-MM-DD")
        key, join = REPORT_BY[by]
        sql = (
            f"SELECT {key} AS key, COUNT(*) AS requests, SUM(u.input_tokens) AS input_tokens,"
            " SUM(u.output_tokens) AS output_tokens, SUM(u.cache_read_tokens) AS cache_read_tokens,"
            " SUM(u.cache_write_tokens) AS cache_write_tokens, SUM(u.cost_usd) AS cost_usd"
            f" FROM usage u {join} WHERE u.day >= ? AND u.day <= ? GROUP BY {key} ORDER BY {key}"
        )
        async with self.db.tx() as tx:
            return await tx.fetch(sql, since or "0000-00-00", until or "9999-99-99")
