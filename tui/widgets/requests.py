"""The live request table: one row per request, added when it starts, filled in when it ends."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text

from tui import format as fmt
from tui.records import RequestRow
from tui.state import Dashboard
from tui.widgets.base import ModelView, status_colour, tint
from tui.widgets.livetable import Justify, LiveTable

COLUMNS: list[tuple[str, str, Justify]] = [
    ("time", "Time", "left"),
    ("session", "Session", "left"),
    ("model", "Model → served by", "left"),
    ("route", "Route", "left"),
    ("in", "In", "right"),
    ("out", "Out", "right"),
    ("cache_tokens", "Cache r/w", "right"),
    ("cost", "Cost", "right"),
    ("latency", "Latency", "right"),
    ("cache", "Cache", "left"),
    ("status", "Status", "left"),
]
# Shown without the "hit-" prefix: "exact" and "semantic" are hits, in green.
_CACHE_COLOURS = {"hit-exact": "success", "hit-semantic": "success", "shadow-hit": "accent"}


class RequestTable(ModelView, LiveTable):
    """Requests as they happen, newest at the bottom; the cursor follows it until moved up."""

    SECTIONS = ("requests",)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(COLUMNS, id=id)
        self.paused = False
        # Called after the screen refresh that shows new or changed rows, with those rows:
        # the benchmark's event-to-screen probe (rows carry when their event was read).
        self.shown_probe: Callable[[list[RequestRow]], None] | None = None
        self._needs_rebuild = False

    def on_mount(self) -> None:
        """Re-colour the rows when the theme changes."""
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._rebuild_later())

    def _rebuild_later(self) -> None:
        self._needs_rebuild = True

    def render_key(self, model: Dashboard) -> tuple[float, ...]:
        """Nothing to do while paused; a theme change forces a pass."""
        if self.paused:
            return (-1.0,)
        return (*super().render_key(model), float(self._needs_rebuild))

    def show(self, model: Dashboard) -> None:
        """Apply what changed since the last pass: new rows, finished rows, dropped rows."""
        if self.paused:
            return  # the changes wait in the model until the table runs again
        changes = model.take_row_changes()
        shown: list[RequestRow] = []
        if changes.rebuild or self._needs_rebuild:
            self._needs_rebuild = False
            self.clear()
            for row in model.rows.values():
                self.set_row(row.id, self.cells(row, model))
        else:
            for row_id in changes.evicted:
                self.remove_row(row_id)
            for row_id in changes.changed:
                changed = model.rows.get(row_id)
                if changed is not None:
                    shown.append(changed)
                    self.set_row(row_id, self.cells(changed, model))
        self.changed()
        if shown and self.shown_probe is not None:
            self.call_after_refresh(self.shown_probe, shown)

    def cells(self, row: RequestRow, model: Dashboard) -> list[Text]:
        """The row's cells, in column order."""
        done = not row.in_flight
        when = model.local(row.ts).strftime("%H:%M:%S") if row.ts else "—"
        served = _served(row)
        asked = f"{short_model(row.requested_model or '?')}{' → ' + served if served else ''}"
        if row.is_count_tokens:
            asked = f"count_tokens {short_model(row.requested_model or '?')}"  # a free token count, no model call
        cache_rw = f"{fmt.tokens(row.cache_read_tokens)}/{fmt.tokens(row.cache_write_tokens)}" if done else ""
        cache = (row.cache_outcome or ("—" if done else "")).removeprefix("hit-")
        return [
            Text(when),
            Text(fmt.short_id(row.session_id, keep=6)),
            Text(asked),
            Text(row.route or ("—" if done else "")),
            Text(fmt.tokens(row.input_tokens) if done else ""),
            Text(fmt.tokens(row.output_tokens) if done else ""),
            Text(cache_rw),
            Text(("free" if row.is_count_tokens else fmt.money(row.cost_usd)) if done else ""),
            Text(fmt.millis(row.latency_ms) if done else ""),
            tint(self, cache, _CACHE_COLOURS.get(row.cache_outcome or "")),
            tint(self, _status_text(row), status_colour(row.status, row.outcome)),
        ]


def short_model(name: str) -> str:
    """A model name without the `claude-` prefix and date suffix, to keep the column narrow."""
    name = name.removeprefix("claude-")
    head, _, tail = name.rpartition("-")
    return head if len(tail) == 8 and tail.isdigit() and head else name


def _served(row: RequestRow) -> str:
    """Who served it, shortened when it is the model that was asked for."""
    if not row.upstream:
        return ""
    provider, _, model = row.upstream.partition("/")
    if model and model == row.requested_model:
        return provider
    return f"{provider}/{short_model(model)}" if model else provider


def _status_text(row: RequestRow) -> str:
    if row.in_flight:
        return "…"
    if row.status is None:
        return row.outcome
    # An upstream error or a refusal is told by its status; a cut stream is not.
    if row.outcome in ("ok", "upstream_error", "rejected"):
        return str(row.status)
    return f"{row.status} {row.outcome}"
