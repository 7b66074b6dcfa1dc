"""`claude-sidecar usage`: tables, JSON, empty ledgers and bad dates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecar import paths
from sidecar.cli import cli
from sidecar.ledger.store import open_db
from sidecar.testing.factories import usage_record


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLAUDE_SIDECAR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLAUDE_SIDECAR_CONFIG", raising=False)
    monkeypatch.setenv("TZ", "UTC")
    return tmp_path / "home"


def seed(rows: list[tuple[str, str, str, int, float]]) -> None:
    """Insert (utc time, model, session, input tokens, cost) rows into the ledger."""
    db = open_db(paths.resolve().db_file)
    try:
        for iso, model, session, inp, cost in rows:
            rec = usage_record(
                iso,
                model,
                session_id=session,
                input_tokens=inp,
                output_tokens=2_000,
                cache_read_tokens=1_000_000,
                cache_write_tokens=30_000,
                cost_usd=cost,
            )
            db.table("usage").insert(rec.to_dict())
    finally:
        db.close()


SAMPLE = [
    ("2026-03-01T10:00", "claude-opus-4-8", "sess-a", 1_234_567, 12.5),
    ("2026-03-01T23:30", "claude-haiku-4-5", "sess-b", 10, 0.25),
    ("2026-03-02T08:00", "claude-opus-4-8", "sess-a", 100, 1.0),
]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["usage", *args])
    return result.exit_code, result.output


def test_no_ledger_yet(home: Path) -> None:
    assert run() == (0, "no usage recorded yet\n")
    code, out = run("monthly", "--json")
    assert (code, json.loads(out)) == (0, [])
    assert not paths.resolve().db_file.exists()


def test_bare_usage_is_a_daily_table(home: Path) -> None:
    seed(SAMPLE)
    code, out = run()
    assert code == 0, out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("Date"))
    for col in (
        "Models",
        "Input",
        "Output",
        "Cache Create",
        "Cache Read",
        "Total Tokens",
        "Cost (USD)",
    ):
        assert col in header
    assert "1,234,577" in out  # input tokens of Mar 1, with thousands separators
    assert "- claude-haiku-4-5" in out and "- claude-opus-4-8" in out
    total = next(line for line in lines if line.startswith("Total"))
    assert total.endswith("$13.75")
    assert "1,234,677" in total
    # Every line of the table has the same width as its header (right-aligned numbers).
    table = lines[lines.index(header) :]
    assert {len(line) for line in table if not line.startswith("-") and "$" in line} == {
        len(header)
    }


def test_days_follow_the_configured_zone(home: Path) -> None:
    seed(SAMPLE)
    cfg = paths.resolve().config_file
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text('[usage]\ntimezone = "Asia/Tokyo"\n')
    code, out = run("daily", "--json")
    assert code == 0, out
    assert [r["key"] for r in json.loads(out)] == ["2026-03-01", "2026-03-02"]
    assert [r["requests"] for r in json.loads(out)] == [1, 2]


def test_json_rows(home: Path) -> None:
    seed(SAMPLE)
    code, out = run("daily", "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert [r["key"] for r in rows] == ["2026-03-01", "2026-03-02"]
    assert rows[0]["models"] == ["claude-haiku-4-5", "claude-opus-4-8"]
    assert rows[0]["cost_usd"] == 12.75
    assert rows[1]["total_tokens"] == 100 + 2_000 + 1_000_000 + 30_000


@pytest.mark.parametrize(
    ("group", "first_header", "keys"),
    [
        ("weekly", "Week", ["2026-02-23", "2026-03-02"]),
        ("monthly", "Month", ["2026-03"]),
        ("session", "Session", ["sess-a", "sess-b"]),
        ("model", "Model", ["claude-opus-4-8", "claude-haiku-4-5"]),
        ("route", "Route", [None]),
    ],
)
def test_other_groupings(home: Path, group: str, first_header: str, keys: list[str | None]) -> None:
    seed(SAMPLE)
    code, out = run(group, "--json")
    assert code == 0, out
    assert [r["key"] for r in json.loads(out)] == keys
    code, out = run(group)
    assert code == 0, out
    assert any(line.startswith(first_header) for line in out.splitlines())
    assert "Models" not in out or group in ("weekly", "monthly")


@pytest.mark.parametrize("since", ["2026-03-02", "20260302"])
def test_since_until_accept_both_date_forms(home: Path, since: str) -> None:
    seed(SAMPLE)
    code, out = run("daily", "--since", since, "--until", "20260302", "--json")
    assert code == 0, out
    assert [r["key"] for r in json.loads(out)] == ["2026-03-02"]


def test_options_before_the_subcommand_count(home: Path) -> None:
    seed(SAMPLE)
    code, out = run("--json", "--since", "2026-03-02", "session")
    assert code == 0, out
    assert [r["key"] for r in json.loads(out)] == ["sess-a"]


def test_an_empty_period_says_so(home: Path) -> None:
    seed(SAMPLE)
    assert run("--since", "2027-01-01") == (0, "no usage in that period\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "'yesterday' is not a date"),
        (["daily", "--until", "2026-13-01"], "is not a date"),
        (["daily", "--since", "2026-03-05", "--until", "2026-03-01"], "is after --until"),
    ],
)
def test_bad_dates_are_usage_errors(home: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["usage", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_corrupt_ledger_is_one_clear_error(home: Path) -> None:
    db_file = paths.resolve().db_file
    db_file.parent.mkdir(parents=True)
    db_file.write_bytes(b"this is not a database" * 100)
    code, out = run()
    assert code == 1
    assert "cannot read the usage ledger" in out


def test_count_tokens_calls_are_shown_apart_from_requests(home: Path) -> None:
    seed(SAMPLE[:1])
    db = open_db(paths.resolve().db_file)
    try:
        for minute in (1, 2, 3):
            rec = usage_record(f"2026-03-01T10:0{minute}", session_id="sess-a", endpoint="/v1/messages/count_tokens")
            db.table("usage").insert(rec.to_dict())
    finally:
        db.close()

    code, out = run()
    _, as_json = run("--json")

    assert code == 0
    [row] = json.loads(as_json)
    assert (row["requests"], row["count_tokens"]) == (1, 3)
    assert "plus 3 count_tokens calls (free; not counted as requests)" in out
