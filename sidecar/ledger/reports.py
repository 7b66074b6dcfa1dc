"""Usage reports: spend and tokens per day, week, month, session, model or route.

Rows are stored with UTC epoch timestamps; days are cut in the user's zone. To keep that
cheap on a large ledger, sqlite first sums rows per 15-minute UTC slot (every real zone
offset and DST change falls on a quarter hour, so a slot never straddles a local
midnight) and Python only maps those slots to local dates.
"""

from __future__ import annotations

import os
import time as _time
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlite_utils

GroupBy = Literal["daily", "weekly", "monthly", "session", "model", "route"]
GROUPS: tuple[GroupBy, ...] = ("daily", "weekly", "monthly", "session", "model", "route")
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")

_SLOT = 900  # seconds
# The model that served (and was billed for) the request; the requested one if none did.
_MODEL = "COALESCE(upstream_model, requested_model)"
# count_tokens calls cost nothing and are no model requests: counted apart, never in `requests`.
COUNT_TOKENS_SQL = "endpoint LIKE '%/count_tokens'"
_SUMS = (
    f"COALESCE(SUM(CASE WHEN {COUNT_TOKENS_SQL} THEN 0 ELSE 1 END), 0) AS requests, "
    f"COALESCE(SUM(CASE WHEN {COUNT_TOKENS_SQL} THEN 1 ELSE 0 END), 0) AS count_tokens, "
    + ", ".join(f"COALESCE(SUM({f}), 0) AS {f}" for f in TOKEN_FIELDS)
    + ", COALESCE(SUM(cost_usd), 0.0) AS cost_usd"
)
_KEY_COLUMNS = {"session": "session_id", "model": _MODEL, "route": "route"}


def report(
    db: sqlite_utils.Database,
    group_by: GroupBy,
    since: date | None = None,
    until: date | None = None,
    tz: ZoneInfo | None = None,
) -> list[dict[str, Any]]:
    """Usage summed per group, `since`..`until` inclusive (local dates in `tz`, default UTC)."""
    tz = tz or ZoneInfo("UTC")
    where, params = _range(since, until, tz)
    if group_by in _KEY_COLUMNS:
        sql = (
            f"SELECT {_KEY_COLUMNS[group_by]} AS key, {_SUMS} FROM usage {where} "
            "GROUP BY key ORDER BY cost_usd DESC, requests DESC, key"
        )
        return [_finish(dict(row)) for row in db.query(sql, params)]
    if group_by not in GROUPS:
        raise ValueError(f"cannot group usage by {group_by!r}")

    sql = f"SELECT CAST(ts / {_SLOT} AS INTEGER) AS slot, {_MODEL} AS model, {_SUMS} FROM usage {where} GROUP BY slot, model"
    groups: dict[str, dict[str, Any]] = {}
    models: dict[str, set[str]] = {}
    keys: dict[int, str] = {}  # slot -> group key
    for row in db.query(sql, params):
        slot = row["slot"]
        key = keys.get(slot)
        if key is None:
            key = keys[slot] = _period_key(
                group_by, datetime.fromtimestamp(slot * _SLOT, tz).date()
            )
        acc = groups.setdefault(
            key, {"key": key, "requests": 0, "count_tokens": 0, **dict.fromkeys(TOKEN_FIELDS, 0), "cost_usd": 0.0}
        )
        for f in ("requests", "count_tokens", *TOKEN_FIELDS, "cost_usd"):
            acc[f] += row[f]
        if row["model"]:
            models.setdefault(key, set()).add(row["model"])
    out = []
    for key in sorted(groups):
        row = _finish(groups[key])
        row["models"] = sorted(models.get(key, ()))
        out.append(row)
    return out


def totals(db: sqlite_utils.Database, tz: ZoneInfo, now: datetime | None = None) -> dict[str, Any]:
    """Today's and this month's requests, tokens and spend, cut in `tz`."""
    today = (now or datetime.now(UTC)).astimezone(tz).date()
    month_start = today.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    out: dict[str, Any] = {"timezone": str(tz)}
    for name, key, start, end in (
        ("today", today.isoformat(), today, today + timedelta(days=1)),
        ("month", today.strftime("%Y-%m"), month_start, next_month),
    ):
        sql = f"SELECT {_SUMS} FROM usage WHERE ts >= ? AND ts < ?"
        row = next(db.query(sql, [_start_of(start, tz), _start_of(end, tz)]))
        out[name] = _finish({"key": key, **row})
    return out


def recent(db: sqlite_utils.Database, since: float, limit: int, brief: bool = False) -> list[dict[str, Any]]:
    """The ledger's rows from `since` (epoch seconds) on, newest first, at most `limit`; `brief`
    keeps only id, ts, endpoint and cost_usd (enough for a burn rate)."""
    columns = "id, ts, endpoint, cost_usd" if brief else "*"
    rows = [dict(r) for r in db.query(f"SELECT {columns} FROM usage WHERE ts >= ? ORDER BY ts DESC, id DESC LIMIT ?", [since, limit])]
    for row in rows:
        if "stream" in row:
            row["stream"] = bool(row["stream"])
    return rows


def local_zone(cfg_tz: str | None = None) -> ZoneInfo:
    """The configured zone, else the machine's (TZ, /etc/localtime, /etc/timezone), else UTC."""
    if cfg_tz:
        return ZoneInfo(cfg_tz)
    for finder in (_zone_from_env, _zone_from_etc):
        zone = finder()
        if zone is not None:
            return zone
    return _zone_from_offset()


def _range(since: date | None, until: date | None, tz: ZoneInfo) -> tuple[str, list[float]]:
    """A WHERE clause for local dates `since`..`until` inclusive."""
    clauses, params = [], []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(_start_of(since, tz))
    if until is not None:
        clauses.append("ts < ?")
        params.append(_start_of(until + timedelta(days=1), tz))
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def _start_of(day: date, tz: ZoneInfo) -> float:
    """Epoch seconds of the first instant of local `day` (also when DST skips its midnight)."""
    return datetime.combine(day, time.min, tzinfo=tz).timestamp()


def _period_key(group_by: GroupBy, day: date) -> str:
    if group_by == "weekly":
        return (day - timedelta(days=day.weekday())).isoformat()  # ISO weeks start on Monday
    if group_by == "monthly":
        return day.strftime("%Y-%m")
    return day.isoformat()


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    """Add total_tokens and round float noise off the summed cost."""
    row["total_tokens"] = sum(int(row[f]) for f in TOKEN_FIELDS)
    row["cost_usd"] = round(float(row["cost_usd"]), 9)
    return row


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _zone_from_path(path: Path) -> ZoneInfo | None:
    """A zone from a tzfile path: by its IANA name when the path shows one, else its contents."""
    real = os.path.realpath(path)
    if "zoneinfo/" in real and (zone := _zone(real.split("zoneinfo/", 1)[1])):
        return zone
    try:
        with open(real, "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return None


def _zone_from_env() -> ZoneInfo | None:
    tz = os.environ.get("TZ", "").lstrip(":")
    if not tz:
        return None
    if tz.startswith("/"):
        return _zone_from_path(Path(tz))
    return _zone(tz)  # POSIX rules like "CET-1CEST" are not IANA names: ignored


def _zone_from_etc() -> ZoneInfo | None:
    localtime = Path("/etc/localtime")
    if localtime.exists():
        zone = _zone_from_path(localtime)
        if zone is not None:
            return zone
    try:
        name = Path("/etc/timezone").read_text(encoding="utf-8").strip()  # Debian
    except OSError:
        return None
    return _zone(name) if name else None


def _zone_from_offset() -> ZoneInfo:
    """The current whole-hour UTC offset as an Etc/GMT zone (Windows, bare containers), else UTC."""
    offset = _time.localtime().tm_gmtoff
    if offset % 3600 == 0 and offset != 0:
        # Etc/GMT names have POSIX signs: UTC+2 is "Etc/GMT-2".
        zone = _zone(f"Etc/GMT{-offset // 3600:+d}")
        if zone is not None:
            return zone
    return ZoneInfo("UTC")
