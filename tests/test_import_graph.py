"""The import graph only gets cleaner: no new circle, no new upward import (scripts/import_graph.py).

The allow-lists below are empty: the graph has no circle and no upward import. Never add an
entry; move the code to the right room instead (a lazy or TYPE_CHECKING import counts too).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "import_graph.py"

# Circles that remain (none): any circle found must lie inside one of these.
ALLOWED_CIRCLES: list[set[str]] = []

# Upward imports that remain (importer, imported): none.
ALLOWED_UPWARD: set[tuple[str, str]] = set()

# Third-party imports a room must not make (see FORBIDDEN in the script) that remain: none.
ALLOWED_FORBIDDEN: set[tuple[str, str]] = set()


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("import_graph", mod)
    spec.loader.exec_module(mod)
    return mod


def violations(report: dict[str, Any]) -> list[str]:
    """What the report has that the allow-lists do not."""
    out = [f"new import circle: {', '.join(c)}" for c in report["circles"] if not any(set(c) <= a for a in ALLOWED_CIRCLES)]
    out += [f"new upward import: {s} -> {d} [{k}]" for s, d, k in report["upward"] if (s, d) not in ALLOWED_UPWARD]
    out += [f"new forbidden import: {s} -> {d} [{k}]" for s, d, k in report["forbidden"] if (s, d) not in ALLOWED_FORBIDDEN]
    return out


def test_no_new_circle_or_upward_import() -> None:
    report = _script().report()
    assert violations(report) == [], "\n".join(violations(report))


def test_a_new_circle_or_upward_import_is_caught() -> None:
    """The check can fail: a circle, an upward import and a forbidden import that are not allowed."""
    g = _script()
    edges = {
        g.Edge("sidecar.errors", "sidecar.paths", "top"),
        g.Edge("sidecar.paths", "sidecar.errors", "lazy"),
        g.Edge("sidecar.errors", "sidecar.proxy.app", "typing"),
    }
    report = {
        "circles": g.circles(edges),
        "upward": [[e.src, e.dst, e.kind] for e in g.upward(edges)],
        "forbidden": [["sidecar.routing.router2", "aiohttp", "top"]],
    }
    assert violations(report) == [
        "new import circle: sidecar.errors, sidecar.paths",
        "new upward import: sidecar.errors -> sidecar.proxy.app [typing]",
        "new forbidden import: sidecar.routing.router2 -> aiohttp [top]",
    ]
