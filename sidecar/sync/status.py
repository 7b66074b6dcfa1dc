"""The sync state in words, the same in `claude-sidecar status`, the TUI and the tray.

Pure functions of the `sync` object of the control API's status (`SyncService.state()`),
so every view says the same thing and tests read it without a display.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sidecar.policy.budgets import duration


def _table(sync: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = sync.get(key)
    return value if isinstance(value, Mapping) else {}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def headline(sync: Any, now: float | None = None) -> str:
    """One short phrase: ``sync: not enrolled`` / ``sync: v7 · 3 queued`` / ``sync: offline 2 h``."""
    if not isinstance(sync, Mapping) or not sync.get("enrolled"):
        return "sync: not enrolled"
    now = time.time() if now is None else now
    state = str(sync.get("state") or "enrolled")
    policy = _table(sync, "policy")
    outbox = _table(sync, "outbox")
    parts = [state]
    last = _num(policy.get("last_sync"))
    if policy.get("error") and last is not None:
        parts.append(f"last sync {duration(now - last)} ago")
    backlog = outbox.get("backlog")
    if isinstance(backlog, int) and backlog:
        parts.append(f"{backlog} queued")
    return "sync: " + " · ".join(parts)


def lines(sync: Any, now: float | None = None) -> list[str]:
    """The detail: server, policy version and age, last sync, backlog, leases."""
    if not isinstance(sync, Mapping) or not sync.get("enrolled"):
        return ["sync: not enrolled (join an org with: claude-sidecar enroll URL --token T)"]
    now = time.time() if now is None else now
    out = [f"sync: {sync.get('state', '?')} with {sync.get('server', '?')} as {sync.get('device_id', '?')}"]
    policy = sync.get("policy")
    if isinstance(policy, Mapping):
        version = policy.get("version")
        issued, last = _num(policy.get("issued_at")), _num(policy.get("last_sync"))
        text = f"  org policy: v{version}" if version is not None else "  org policy: none received yet"
        if issued is not None:
            text += f", issued {duration(now - issued)} ago"
        if last is not None:
            text += f"; last sync {duration(now - last)} ago"
        out.append(text)
        if policy.get("error"):
            out.append(f"  policy problem: {policy['error']}")
        if policy.get("closed"):
            out.append(f"  REFUSING REQUESTS: {policy['closed']}")
    outbox = sync.get("outbox")
    if isinstance(outbox, Mapping):
        text = f"  usage upload: {outbox.get('backlog', '?')} waiting, {outbox.get('uploaded_total', 0)} sent"
        if outbox.get("conflicts"):
            text += f", {outbox['conflicts']} refused as conflicts"
        if outbox.get("last_error"):
            text += f"; last error: {outbox['last_error']}"
        out.append(text)
    leases = sync.get("leases")
    if isinstance(leases, Mapping) and leases:
        out.append("  shared budget: " + _leases(leases))
    return out


def _leases(leases: Mapping[str, Any]) -> str:
    """Each pooled period's lease: used of granted, and an empty pool or an outage."""
    periods = leases.get("periods")
    if not isinstance(periods, Mapping):
        return "unknown"
    parts = []
    for period, p in periods.items():
        if not isinstance(p, Mapping) or p.get("pooled") is False:
            continue
        if p.get("pooled") is None:
            parts.append(f"{period}: asking the server")
            continue
        text = f"{period}: ${_num(p.get('used_usd')) or 0:.4f} used of a ${_num(p.get('amount_usd')) or 0:.2f} lease"
        short = p.get("exhausted")
        if isinstance(short, Mapping):
            text += f"; {short.get('pool', 'the pool')} has ${_num(short.get('remaining_usd')) or 0:.2f} left"
        if p.get("offline"):
            text += f"; offline: {p['offline']}"
        parts.append(text)
    return "; ".join(parts) if parts else "no team or org pool applies"
