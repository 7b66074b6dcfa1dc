"""The Ledger: priced on record, written in background batches, nothing lost on close."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from sidecar.ledger import writer
from sidecar.ledger.pricing import Pricing
from sidecar.ledger.record import UsageRecord
from sidecar.ledger.store import open_db
from sidecar.ledger.writer import Ledger
from sidecar.testing.factories import usage_record


def _rec(i: int = 0, model: str = "claude-opus-4-8") -> UsageRecord:
    return usage_record(
        None,
        model,
        stream=i % 2 == 0,
        session_id=f"s{i % 3}",
        input_tokens=1_000 + i,
        output_tokens=100,
        cache_read_tokens=10_000,
        cache_write_tokens=500,
        latency_ms=12.5,
        ttft_ms=None if i % 2 else 3.0,
    )


def _rows(path: Path) -> dict[str, dict[str, object]]:
    db = open_db(path)
    try:
        return {r["id"]: r for r in db.query("SELECT * FROM usage")}
    finally:
        db.close()


async def test_record_prices_and_returns_the_record(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "s.db", Pricing())
    await led.start()
    try:
        rec = _rec()
        assert led.record(rec) is rec
        assert rec.cost_usd == pytest.approx(
            (1_000 * 5 + 100 * 25 + 10_000 * 0.5 + 500 * 6.25) / 1e6
        )
    finally:
        await led.close()


async def test_many_records_then_flush_are_all_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    led = Ledger(path, Pricing())
    await led.start()
    try:
        recs = [led.record(_rec(i)) for i in range(writer.BATCH_SIZE * 2 + 37)]
        await led.flush()
        assert led.pending == 0
        rows = _rows(path)
    finally:
        await led.close()
    assert len(rows) == len(recs)
    for rec in recs:
        row = rows[rec.id]
        expected = rec.to_dict()
        expected["stream"] = int(rec.stream)
        assert row == expected


async def test_close_flushes_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    led = Ledger(path, Pricing())
    await led.start()
    recs = [led.record(_rec(i)) for i in range(50)]
    await led.close()
    assert set(_rows(path)) == {r.id for r in recs}


async def test_record_does_not_wait_for_the_disk(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "s.db", Pricing())
    await led.start()
    try:
        led.record(_rec())
        assert led.pending == 1  # queued; written only once the flusher runs
        await led.flush()
        assert led.pending == 0
    finally:
        await led.close()


async def test_a_failed_write_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.db"
    led = Ledger(path, Pricing())
    real_write = led._write
    calls = 0

    def flaky(batch: list[UsageRecord]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk hiccup")
        real_write(batch)

    monkeypatch.setattr(led, "_write", flaky)
    await led.start()
    with caplog.at_level(logging.ERROR, logger="sidecar.ledger.writer"):
        recs = [led.record(_rec(i)) for i in range(5)]
        await asyncio.wait_for(led.flush(), timeout=10)
    await led.close()
    assert set(_rows(path)) == {r.id for r in recs}
    assert any("will retry" in r.getMessage() for r in caplog.records)


async def test_records_after_close_are_not_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.db"
    led = Ledger(path, Pricing())
    await led.start()
    await led.close()
    with caplog.at_level(logging.ERROR, logger="sidecar.ledger.writer"):
        rec = led.record(_rec())
    assert rec.cost_usd > 0
    assert _rows(path) == {}
    assert any("after the ledger closed" in r.getMessage() for r in caplog.records)


async def test_the_served_model_is_what_is_billed(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "s.db", Pricing())
    await led.start()
    try:
        rec = _rec()
        rec.requested_model, rec.upstream_model = "claude-opus-4-8", "claude-haiku-4-5"
        led.record(rec)
        assert rec.cost_usd == pytest.approx(
            (1_000 * 1 + 100 * 5 + 10_000 * 0.1 + 500 * 1.25) / 1e6
        )
    finally:
        await led.close()


async def test_one_bad_row_never_holds_back_the_others(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A lone surrogate (an undecodable header byte) is stored readable; a value sqlite cannot
    hold is dropped alone, loudly; every other row of the batch is written."""
    path = tmp_path / "s.db"
    led = Ledger(path, Pricing())
    await led.start()
    good = [_rec(i) for i in range(5)]
    odd = _rec(5)
    odd.session_id = "sess-\udcff"
    huge = _rec(6)
    huge.output_tokens = 2**70
    with caplog.at_level(logging.ERROR, logger="sidecar.ledger.writer"):
        for rec in (*good[:2], odd, huge, *good[2:]):
            led.record(rec)
        await asyncio.wait_for(led.flush(), 10)
    await led.close()
    rows = _rows(path)
    assert set(rows) == {r.id for r in (*good, odd)}
    assert rows[odd.id]["session_id"] == "sess-?"
    assert any(huge.id in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)
