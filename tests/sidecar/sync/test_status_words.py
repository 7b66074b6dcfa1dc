"""The sync state in words: the same phrases in `status`, the TUI and the tray."""

from __future__ import annotations

from sidecar.sync import status
from tray.menu import menu_model
from tray.state import state_from_api

NOW = 1_765_000_000.0
SYNCED = {
    "enrolled": True, "server": "http://127.0.0.1:9000", "device_id": "dvc_1", "state": "synced v7",
    "policy": {"version": 7, "issued_at": NOW - 120, "last_sync": NOW - 3, "error": None},
    "outbox": {"backlog": 0, "uploaded_total": 41, "conflicts": 0, "last_error": None},
    "leases": {"lease_usd": 5.0, "periods": {
        "day": {"pooled": True, "amount_usd": 5.0, "used_usd": 1.8, "exhausted": None, "offline": None},
        "month": {"pooled": False, "amount_usd": 0.0, "used_usd": 0.0},
    }},
}  # fmt: skip


def test_not_enrolled_says_how_to_enroll() -> None:
    for sync in (None, {"enrolled": False, "state": "not enrolled"}, "garbage"):
        assert status.headline(sync, NOW) == "sync: not enrolled"
        assert status.lines(sync, NOW) == ["sync: not enrolled (join an org with: claude-sidecar enroll URL --token T)"]


def test_synced_names_version_age_backlog_and_lease() -> None:
    assert status.headline(SYNCED, NOW) == "sync: synced v7"
    assert status.lines(SYNCED, NOW) == [
        "sync: synced v7 with http://127.0.0.1:9000 as dvc_1",
        "  org policy: v7, issued 2 min ago; last sync 3 s ago",
        "  usage upload: 0 waiting, 41 sent",
        "  shared budget: day: $1.8000 used of a $5.00 lease",
    ]


def test_offline_says_since_when_and_what_waits() -> None:
    offline = {
        **SYNCED, "state": "v7, cannot reach the central server",
        "policy": {"version": 7, "issued_at": NOW - 7200, "last_sync": NOW - 3600, "error": "cannot reach the central server"},
        "outbox": {"backlog": 250, "uploaded_total": 41, "last_error": "cannot reach the central server"},
    }  # fmt: skip
    assert status.headline(offline, NOW) == "sync: v7, cannot reach the central server · last sync 1 h ago · 250 queued"
    assert "  policy problem: cannot reach the central server" in status.lines(offline, NOW)


def test_the_tray_menu_shows_the_sync_line_only_when_enrolled() -> None:
    base = {"address": "http://127.0.0.1:8787", "usage": {}, "in_flight": 0}
    texts = [e.text for e in menu_model(state_from_api({**base, "sync": SYNCED}))]
    assert any(t.startswith("Org sync: synced v7") for t in texts), texts
    texts = [e.text for e in menu_model(state_from_api({**base, "sync": {"enrolled": False}}))]
    assert not any(t.startswith("Org sync") for t in texts), texts


def test_leases_in_words() -> None:
    none = {**SYNCED, "leases": {"periods": {"day": {"pooled": False}, "month": {"pooled": False}}}}
    assert status.lines(none, NOW)[-1] == "  shared budget: no team or org pool applies"
    empty = {**SYNCED, "leases": {"periods": {"day": {
        "pooled": True, "amount_usd": 0.05, "used_usd": 0.05, "exhausted": {"pool": "team core", "remaining_usd": 0.0},
        "offline": None}}}}  # fmt: skip
    assert status.lines(empty, NOW)[-1] == "  shared budget: day: $0.0500 used of a $0.05 lease; team core has $0.00 left"
