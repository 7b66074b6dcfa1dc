#!/usr/bin/env python3
"""Print the import graph's circles and its upward imports (a lower room importing a higher one).

Every `import` counts, wherever it stands (module level, inside a function, under
TYPE_CHECKING): a lazy import that breaks a circle at run time still ties the two rooms
together for a reader. Each upward import is tagged with where it stands.

    .venv/bin/python scripts/import_graph.py          # the report
    .venv/bin/python scripts/import_graph.py --json   # the same, for tests/test_import_graph.py

The rooms, lowest first (a module belongs to the room of its longest matching prefix). A
module may import its own room and any room below it; nothing else.
"""

from __future__ import annotations

import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sidecar", "tui", "tray")

# Lowest first. The request path reads upwards: wire formats and records, the config, the
# request model and stage protocol, providers, the router, the stages that govern a request,
# the HTTP layer that assembles them, and the programs on top.
ROOMS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("sidecar", "sidecar.errors", "sidecar.paths", "sidecar.net", "sidecar.tasks", "sidecar.lifecycle", "sidecar.daemon_state", "sidecar.events")),
    ("protocol", ("sidecar.protocol",)),
    ("records", ("sidecar.ledger.record",)),
    # The config: the shared reader, each section's reader (a `config.py` or `settings.py` kept
    # next to the code that owns it), the leaf tables they check names against (provider
    # types, guardrail detectors, cache normalisations), and the root `sidecar.config` that
    # assembles them. None of them imports anything above this room.
    (
        "config",
        (
            "sidecar.configread",
            "sidecar.config",
            "sidecar.secrets",
            "sidecar.proxy.config",
            "sidecar.providers.config",
            "sidecar.providers.registry",
            "sidecar.ledger.config",
            "sidecar.policy.config",
            "sidecar.policy.detectors",
            "sidecar.cache.config",
            "sidecar.cache.normalise",
            "sidecar.routing.config",
            "sidecar.gateway.config",
            "sidecar.observability.settings",
            "sidecar.mcp.settings",
            "sidecar.sync.settings",
        ),
    ),
    ("pipeline", ("sidecar.pipeline",)),
    ("providers", ("sidecar.providers",)),
    ("routing", ("sidecar.routing",)),
    (
        "domain",
        (
            "sidecar.policy",
            "sidecar.cache",
            "sidecar.audit",
            "sidecar.ledger",
            "sidecar.gateway",
            "sidecar.observability",
            "sidecar.sync",
            "sidecar.central",
            "sidecar.mcp",
            # The app's typed state and the HTTP helpers the domain's own endpoints share with
            # sidecar.proxy, which assembles the app.
            "sidecar.appkeys",
            "sidecar.web_errors",
        ),
    ),
    ("proxy", ("sidecar.proxy",)),
    ("apps", ("sidecar.cli", "sidecar.service", "sidecar.testing", "sidecar.__main__", "tui", "tray")),
]
RANK = {name: i for i, (name, _) in enumerate(ROOMS)}
# Third-party packages a room must not import: the request model and the router know nothing
# of the HTTP server (the dispatch stage in sidecar.proxy relays what the router opened).
FORBIDDEN = {"aiohttp": ("base", "protocol", "records", "config", "pipeline", "routing")}


@dataclass(frozen=True)
class Edge:
    """One import of one module by another."""

    src: str
    dst: str
    kind: str  # top | lazy (inside a function or class body) | typing (under TYPE_CHECKING)


def room(module: str) -> str:
    """The room of `module` (its longest matching prefix)."""
    best, length = "", -1
    for name, prefixes in ROOMS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > length:
                best, length = name, len(p)
    if not best:
        raise SystemExit(f"import_graph: {module} is in no room; add it to ROOMS")
    return best


def modules() -> dict[str, Path]:
    """Every module of the packages, by dotted name."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module `name` starts with (`sidecar.x.Y` -> `sidecar.x`)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in known:
            return cand
        parts.pop()
    return None


class _Visitor(ast.NodeVisitor):
    def __init__(self, src: str, known: dict[str, Path]) -> None:
        self.src, self.known = src, known
        self.edges: set[Edge] = set()
        self.forbidden: set[Edge] = set()
        self.depth = 0  # inside a function or class body
        self.typing = 0  # inside `if TYPE_CHECKING:`

    def _add(self, names: list[str]) -> None:
        kind = "typing" if self.typing else "lazy" if self.depth else "top"
        for name in names:
            top = name.split(".")[0]
            if top in FORBIDDEN and room(self.src) in FORBIDDEN[top]:
                self.forbidden.add(Edge(self.src, top, kind))
            dst = _resolve(name, self.known)
            if dst is not None and dst != self.src and not self.src.startswith(dst + "."):
                self.edges.add(Edge(self.src, dst, kind))

    def visit_Import(self, node: ast.Import) -> None:
        self._add([a.name for a in node.names])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add([f"{node.module}.{a.name}" for a in node.names])

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        is_tc = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        self.typing += is_tc
        for n in node.body:
            self.visit(n)
        self.typing -= is_tc
        for n in node.orelse:
            self.visit(n)

    def _body(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _body


def edges() -> tuple[set[Edge], set[Edge]]:
    """Every import between two modules of the packages, and every forbidden third-party import."""
    known = modules()
    out: set[Edge] = set()
    bad: set[Edge] = set()
    for mod, path in known.items():
        v = _Visitor(mod, known)
        v.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        out |= v.edges
        bad |= v.forbidden
    return out, bad


def circles(all_edges: set[Edge]) -> list[list[str]]:
    """The import circles: strongly connected sets of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in all_edges:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc: list[str] = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out, key=lambda c: (-len(c), c))


def upward(all_edges: set[Edge]) -> list[Edge]:
    """Imports from a lower room into a higher one."""
    return sorted((e for e in all_edges if RANK[room(e.src)] < RANK[room(e.dst)]), key=lambda e: (e.src, e.dst, e.kind))


def report() -> dict[str, object]:
    """Circles and upward imports, as plain data."""
    es, bad = edges()
    return {
        "modules": len(modules()),
        "edges": len(es),
        "circles": circles(es),
        "upward": [[e.src, e.dst, e.kind] for e in upward(es)],
        "forbidden": [[e.src, e.dst, e.kind] for e in sorted(bad, key=lambda e: (e.src, e.dst, e.kind))],
    }


def main() -> None:
    """Print the report (text, or JSON with --json)."""
    data = report()
    if "--json" in sys.argv[1:]:
        print(json.dumps(data, indent=1))
        return
    print("rooms, lowest first: " + " < ".join(name for name, _ in ROOMS))
    print(f"modules: {data['modules']}, imports between them: {data['edges']}")
    circ: list[list[str]] = data["circles"]  # type: ignore[assignment]
    up: list[list[str]] = data["upward"]  # type: ignore[assignment]
    print(f"\ncircles: {len(circ)} ({sum(len(c) for c in circ)} modules in them)")
    for c in circ:
        print(f"  {len(c)} modules: " + ", ".join(c))
    print(f"\nupward imports: {len(up)}")
    for src, dst, kind in up:
        print(f"  {src} ({room(src)}) -> {dst} ({room(dst)}) [{kind}]")
    bad: list[list[str]] = data["forbidden"]  # type: ignore[assignment]
    print(f"\nforbidden third-party imports: {len(bad)}")
    for src, dst, kind in bad:
        print(f"  {src} ({room(src)}) -> {dst} [{kind}]")


if __name__ == "__main__":
    main()
