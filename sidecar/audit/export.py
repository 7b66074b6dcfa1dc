"""Exporting the audit log as JSON lines, one entry a line, oldest first."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from sidecar.audit.chain import Entry


def write_jsonl(entries: Iterable[Entry], out: TextIO, since: float | None = None, until: float | None = None) -> int:
    """Write the entries with `since <= ts < until` to `out`; return how many."""
    n = 0
    for e in entries:
        if (since is not None and e.ts < since) or (until is not None and e.ts >= until):
            continue
        out.write(json.dumps(e.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n")
        n += 1
    return n
