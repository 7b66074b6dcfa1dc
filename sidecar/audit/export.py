"""Exporting the audit log as JSON lines, one entry a line, oldest first."""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterable
from typing import TextIO

from sidecar.audit.chain import Entry


def write_jsonl(entries: Iterable[Entry], out: TextIO, since: float | None = None, until: float | None = None) -> int:
    """Write the entries with `since <= ts < until` to `out`; return how many. The lines are
    UTF-8 whatever the locale says (standard output redirected to a file is cp1252 on
    Windows): `verify --file` reads them as UTF-8."""
    if isinstance(out, io.TextIOWrapper) and codecs.lookup(out.encoding).name != "utf-8":
        out.reconfigure(encoding="utf-8")
    n = 0
    for e in entries:
        if (since is not None and e.ts < since) or (until is not None and e.ts >= until):
            continue
        out.write(json.dumps(e.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n")
        n += 1
    return n
