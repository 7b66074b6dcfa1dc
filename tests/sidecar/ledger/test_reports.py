"""Reports: grouping, local-zone day boundaries, inclusive date ranges, totals, local zone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlite_utils

from sidecar.ledger import reports
from sidecar.ledger.reports import local_zone, report, totals
from sidecar.ledger.store import open_db
from sidecar.testing.factories import usage_record

UTC_ZONE = ZoneInfo("UTC")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite_utils.Database]:
    d = open_db(tmp_path / "s.db")
    yield d
    d.close()


def add(
    db: sqlite_utils.Database,
    iso: str,
    model: str = "claude-opus-4-8",
    cost: float = 1.0,
    session: str | None = "s1",
    route: str | None = None,
    tokens: tuple[int, int, int, int] = (10, 20, 30, 40),
    upstream: str | None = "",
) -> None:
    inp, out, read, write = tokens
    rec = usage_record(
        iso,
        model,
        upstream_model=model if upstream == "" else upstream,
        session_id=session,
        route=route,
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cost_usd=cost,
    )
    db.table("usage").insert(rec.to_dict())


def keys(rows: list[dict[str, object]]) -> list[object]:
    return [r["key"] for r in rows]


def test_daily_columns_and_sums(db: sqlite_utils.Database) -> None:
    add(db, "2026-03-01T10:00", cost=0.1, tokens=(1, 2, 3, 4))
    add(db, "2026-03-01T11:00", model="claude-haiku-4-5", cost=0.2, tokens=(10, 20, 30, 40))
    add(db, "2026-03-02T09:00", cost=0.5)
    rows = report(db, "daily", None, None, UTC_ZONE)
    assert rows[0] == {
        "key": "2026-03-01",
        "requests": 2,
        "count_tokens": 0,
        "input_tokens": 11,
        "output_tokens": 22,
        "cache_write_tokens": 44,
        "cache_read_tokens": 33,
        "total_tokens": 110,
        "cost_usd": pytest.approx(0.3),
        "models": ["claude-haiku-4-5", "claude-opus-4-8"],
    }
    assert keys(rows) == ["2026-03-01", "2026-03-02"]


def test_count_tokens_calls_are_counted_apart_from_requests(db: sqlite_utils.Database) -> None:
    """They cost nothing: a report that counted them as requests would halve the cost per request."""
    add(db, "2026-03-01T10:00", cost=0.5)
    for minute, endpoint in ((1, "/v1/messages/count_tokens"), (2, "/anthropic/v1/messages/count_tokens")):
        db.table("usage").insert(usage_record(f"2026-03-01T10:0{minute}", endpoint=endpoint, session_id="s1", cost_usd=0.0).to_dict())
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    for group in reports.GROUPS:
        [row] = report(db, group, None, None, UTC_ZONE)
        assert (row["requests"], row["count_tokens"], row["cost_usd"]) == (1, 2, 0.5), group
    today = totals(db, UTC_ZONE, now)["today"]
    assert (today["requests"], today["count_tokens"]) == (1, 2)
    newest = reports.recent(db, 0.0, 10)
    assert [r["endpoint"] for r in newest] == ["/anthropic/v1/messages/count_tokens", "/v1/messages/count_tokens", "/v1/messages"]
    assert newest[-1]["stream"] is True
    assert [r["id"] for r in reports.recent(db, 0.0, 1, brief=True)] == [newest[0]["id"]]
    assert set(reports.recent(db, 0.0, 1, brief=True)[0]) == {"id", "ts", "endpoint", "cost_usd"}


def test_days_are_cut_in_the_given_zone(db: sqlite_utils.Database) -> None:
    add(db, "2026-03-01T23:30")  # Berlin: 00:30 on Mar 2
    assert keys(report(db, "daily", None, None, UTC_ZONE)) == ["2026-03-01"]
    assert keys(report(db, "daily", None, None, ZoneInfo("Europe/Berlin"))) == ["2026-03-02"]


@pytest.mark.parametrize(
    ("zone", "iso", "local_day"),
    [
        ("America/Los_Angeles", "2026-03-02T05:00", "2026-03-01"),  # 21:00 PST
        ("America/Los_Angeles", "2026-03-02T08:30", "2026-03-02"),  # 00:30 PST
        (
            "America/Los_Angeles",
            "2026-03-08T07:30",
            "2026-03-07",
        ),  # 23:30 PST, DST starts that night
        ("America/Los_Angeles", "2026-03-09T06:30", "2026-03-08"),  # 23:30 PDT
        ("America/Los_Angeles", "2026-03-09T07:30", "2026-03-09"),  # 00:30 PDT
        ("Asia/Tokyo", "2026-03-01T14:59", "2026-03-01"),
        ("Asia/Tokyo", "2026-03-01T15:00", "2026-03-02"),  # midnight JST
        ("Asia/Kolkata", "2026-03-01T18:29", "2026-03-01"),  # +05:30
        ("Asia/Kolkata", "2026-03-01T18:31", "2026-03-02"),
        ("Asia/Kathmandu", "2026-03-01T18:14", "2026-03-01"),  # +05:45
        ("Asia/Kathmandu", "2026-03-01T18:16", "2026-03-02"),
    ],
)
def test_local_day_boundaries(
    db: sqlite_utils.Database, zone: str, iso: str, local_day: str
) -> None:
    add(db, iso)
    assert keys(report(db, "daily", None, None, ZoneInfo(zone))) == [local_day]


def test_since_and_until_are_inclusive_local_dates(db: sqlite_utils.Database) -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    add(db, "2026-02-28T14:59")  # Feb 28 23:59 JST
    add(db, "2026-02-28T15:00")  # Mar 1 00:00 JST
    add(db, "2026-03-02T14:59")  # Mar 2 23:59 JST
    add(db, "2026-03-02T15:00")  # Mar 3 00:00 JST
    rows = report(db, "daily", date(2026, 3, 1), date(2026, 3, 2), tokyo)
    assert keys(rows) == ["2026-03-01", "2026-03-02"]
    assert sum(r["requests"] for r in rows) == 2
    assert keys(report(db, "daily", date(2026, 3, 3), None, tokyo)) == ["2026-03-03"]
    assert keys(report(db, "daily", None, date(2026, 2, 28), tokyo)) == ["2026-02-28"]


def test_weeks_start_on_monday_and_months_are_local(db: sqlite_utils.Database) -> None:
    add(db, "2026-11-29T12:00")  # Sunday
    add(db, "2026-11-30T12:00")  # Monday
    add(db, "2026-12-06T12:00")  # Sunday
    rows = report(db, "weekly", None, None, UTC_ZONE)
    assert [(r["key"], r["requests"]) for r in rows] == [("2026-11-23", 1), ("2026-11-30", 2)]
    assert [(r["key"], r["requests"]) for r in report(db, "monthly", None, None, UTC_ZONE)] == [
        ("2026-11", 2),
        ("2026-12", 1),
    ]
    # 2026-11-30T23:30 UTC is already December in Berlin.
    add(db, "2026-11-30T23:30")
    assert [
        (r["key"], r["requests"])
        for r in report(db, "monthly", None, None, ZoneInfo("Europe/Berlin"))
    ] == [
        ("2026-11", 2),
        ("2026-12", 2),
    ]


def test_session_model_and_route_groups_sort_by_cost(db: sqlite_utils.Database) -> None:
    add(db, "2026-03-01T10:00", session="a", model="claude-haiku-4-5", cost=0.1, route="cheap")
    add(db, "2026-03-01T11:00", session="b", cost=2.0)
    add(db, "2026-03-01T12:00", session="b", cost=1.0)
    add(db, "2026-03-01T13:00", session=None, cost=0.5, model="claude-sonnet-4-5", upstream=None)
    sessions = report(db, "session", None, None, UTC_ZONE)
    assert [(r["key"], r["requests"], r["cost_usd"]) for r in sessions] == [
        ("b", 2, 3.0),
        (None, 1, 0.5),
        ("a", 1, 0.1),
    ]
    assert "models" not in sessions[0]
    models = report(db, "model", None, None, UTC_ZONE)
    # The model that served the request counts; the requested one when none did.
    assert keys(models) == ["claude-opus-4-8", "claude-sonnet-4-5", "claude-haiku-4-5"]
    assert keys(report(db, "route", None, None, UTC_ZONE)) == [None, "cheap"]
    assert report(db, "session", date(2026, 3, 2), None, UTC_ZONE) == []


def test_an_empty_ledger_reports_nothing(db: sqlite_utils.Database) -> None:
    for group in reports.GROUPS:
        assert report(db, group, None, None, UTC_ZONE) == []


def test_totals_for_today_and_this_month(db: sqlite_utils.Database) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    add(db, "2026-10-31T23:30", cost=4.0)  # Nov 1 00:30 in Berlin (CET, UTC+1)
    add(db, "2026-10-31T22:30", cost=8.0)  # still Oct 31 in Berlin
    add(db, "2026-11-27T12:00", cost=2.0)
    add(db, "2026-11-27T23:30", cost=1.0, tokens=(1, 1, 1, 1))  # Nov 28 00:30 Berlin
    add(db, "2026-11-28T20:00", cost=0.5, tokens=(1, 1, 1, 1))
    add(db, "2026-12-01T00:00", cost=100.0)  # a later month
    now = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)
    t = totals(db, berlin, now)
    assert t["timezone"] == "Europe/Berlin"
    assert t["today"] == {
        "key": "2026-11-28",
        "requests": 2,
        "count_tokens": 0,
        "input_tokens": 2,
        "output_tokens": 2,
        "cache_write_tokens": 2,
        "cache_read_tokens": 2,
        "total_tokens": 8,
        "cost_usd": 1.5,
    }
    assert (t["month"]["key"], t["month"]["requests"], t["month"]["cost_usd"]) == (
        "2026-11",
        4,
        7.5,
    )


def test_totals_of_an_empty_ledger_are_zero(db: sqlite_utils.Database) -> None:
    t = totals(db, UTC_ZONE)
    assert t["today"]["requests"] == 0
    assert t["month"]["cost_usd"] == 0.0


def test_local_zone_prefers_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert local_zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")


# A path form of TZ only where the system has zoneinfo files (Linux, macOS).
TZ_FORMS = ["Asia/Tokyo", ":Asia/Tokyo"] + [
    p for p in ["/usr/share/zoneinfo/Asia/Tokyo"] if Path(p).exists()
]


@pytest.mark.parametrize("tz", TZ_FORMS)
def test_local_zone_reads_tz(monkeypatch: pytest.MonkeyPatch, tz: str) -> None:
    monkeypatch.setenv("TZ", tz)
    assert str(local_zone(None)) == "Asia/Tokyo"


def test_local_zone_always_returns_a_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "not a zone")
    assert isinstance(local_zone(None), ZoneInfo)
    monkeypatch.delenv("TZ")
    assert isinstance(local_zone(None), ZoneInfo)
