"""One request in full: what was asked, what the sidecar decided, what it cost, how it went."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui import format as fmt
from tui.records import RequestRow
from tui.state import Dashboard

# Fields shown in a named section; anything else the event carries goes under "Other".
_SECTIONS: dict[str, tuple[str, ...]] = {
    "Request": ("id", "ts", "endpoint", "requested_model", "model", "stream", "session_id", "agent_id", "request_bytes"),
    "Decisions": ("route", "target", "provider", "upstream_model", "attempts", "fallback", "cache_outcome", "decisions"),
    "Usage": ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd", "saved_usd"),
    "Outcome": ("status", "outcome", "error_type", "stop_reason", "latency_ms", "ttft_ms", "response_bytes", "upstream_request_id"),
}
_CONTENT_KEYS = ("request_body", "response_body", "content")


class RequestDetail(ModalScreen[None]):
    """A modal with every field of one request's record (bodies only when the sidecar logged them)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "dismiss", "Close")]

    def __init__(self, row: RequestRow, model: Dashboard) -> None:
        super().__init__()
        self.row = row
        self.model = model

    def compose(self) -> ComposeResult:
        """The sections in a scrollable box."""
        with VerticalScroll(id="detail"):
            yield Static(self.text(), id="detail-body")

    def on_mount(self) -> None:
        """Title the box with the request id."""
        self.query_one("#detail").border_title = f"Request {self.row.id}"
        self.query_one("#detail").border_subtitle = "esc to close"

    def text(self) -> str:
        """All sections as content markup."""
        data = self.row.data
        out: list[str] = []
        for title, keys in _SECTIONS.items():
            lines = [_field(k, data[k], self.model) for k in keys if k in data and data[k] not in (None, "", [])]
            out += [f"[b $primary]{title}[/]", *(lines or ["[$text-muted]—[/]"]), ""]
        out += ["[b $primary]Response headers set by the sidecar[/]", *_headers(data), ""]
        out += ["[b $primary]Content[/]", *_content(data), ""]
        known = {k for keys in _SECTIONS.values() for k in keys} | {"headers", *_CONTENT_KEYS}
        other = [_field(k, v, self.model) for k, v in data.items() if k not in known]
        if other:
            out += ["[b $primary]Other[/]", *other]
        if self.row.in_flight:
            out.insert(0, "[$accent]in flight: the outcome is not known yet[/]\n")
        elif self.row.outcome == "lost":
            out.insert(0, "[$warning]the connection dropped before this request's outcome arrived[/]\n")
        return "\n".join(out).rstrip()


def _field(key: str, value: Any, model: Dashboard) -> str:
    if key == "ts" and isinstance(value, int | float):
        shown = model.local(float(value)).isoformat(timespec="milliseconds")
    elif key in ("cost_usd", "saved_usd") and isinstance(value, int | float):
        shown = fmt.money(float(value))
    elif key in ("latency_ms", "ttft_ms") and isinstance(value, int | float):
        shown = fmt.millis(float(value))
    elif key == "decisions" and isinstance(value, list):
        return "decisions\n" + "\n".join(f"  • {fmt.plain(_decision(d))}" for d in value)
    elif isinstance(value, dict | list):
        shown = json.dumps(value, indent=None, sort_keys=True)
    else:
        shown = str(value)
    return f"[$text-muted]{key:<20}[/]{fmt.plain(shown)}"


def _decision(d: Any) -> str:
    if isinstance(d, dict):
        return f"{d.get('stage', '?')}: {d.get('action', '?')}" + (f" ({d['reason']})" if d.get("reason") else "")
    return str(d)


def _headers(data: dict[str, Any]) -> list[str]:
    headers = data.get("headers")
    if isinstance(headers, dict) and headers:
        return [f"[$text-muted]{fmt.plain(str(k))}:[/] {fmt.plain(str(v))}" for k, v in headers.items()]
    if "provider" not in data:
        return ["[$text-muted]— (not finished)[/]"]
    derived = {
        "x-sidecar-request-id": data.get("id"),
        "x-sidecar-route": data.get("route"),
        "x-sidecar-upstream": "/".join(str(p) for p in (data.get("provider"), data.get("upstream_model")) if p),
        "x-sidecar-cache": data.get("cache_outcome"),
    }
    return [f"[$text-muted]{k}:[/] {fmt.plain(str(v))}" for k, v in derived.items() if v]


def _content(data: dict[str, Any]) -> list[str]:
    bodies = [(k, data[k]) for k in _CONTENT_KEYS if data.get(k)]
    if not bodies:
        return ["[$text-muted]Prompt and response bodies are not stored (content logging is off).[/]"]
    return [f"{k}:\n{fmt.plain(v if isinstance(v, str) else json.dumps(v, indent=2))}" for k, v in bodies]
