"""The MCP gateway: upstream servers and their health, calls and errors per tool, and the
definition tokens Code Mode keeps out of each request."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from tui import format as fmt
from tui.state import Dashboard
from tui.widgets.base import ModelView, tint

_STATE_COLOURS = {"up": "success", "starting": "accent", "down": "error", "stopped": "warning"}


class McpView(ModelView, Vertical):
    """A summary line, the server table and the per-tool counters, or why there are none."""

    SECTIONS = ("mcp",)

    def compose(self) -> ComposeResult:
        """The summary over the two tables."""
        yield Static(id="mcp-summary", classes="notice")
        yield DataTable[Text](id="mcp-servers", cursor_type="row", zebra_stripes=True)
        yield DataTable[Text](id="mcp-tools", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        """Add the columns."""
        servers: DataTable[Text] = self.query_one("#mcp-servers", DataTable)
        servers.border_title = "Servers"
        servers.add_columns("Server", "State", "Transport", "Tools", "Code Mode", "Calls", "Errors", "Refused", "Restarts", "Last error")
        tools: DataTable[Text] = self.query_one("#mcp-tools", DataTable)
        tools.border_title = "Tools called since the sidecar started"
        tools.add_columns("Server", "Tool", "Calls", "Errors", "Refused", "Bytes", "Avg time")

    def show(self, model: Dashboard) -> None:
        """Render the summary and both tables."""
        data = model.mcp.data
        servers = [s for s in data.get("servers", []) if isinstance(s, dict)]
        tools = [t for t in data.get("tools", []) if isinstance(t, dict)]
        self.query_one("#mcp-summary", Static).update(summary(model.mcp.state, data, servers, tools))
        server_table: DataTable[Text] = self.query_one("#mcp-servers", DataTable)
        tool_table: DataTable[Text] = self.query_one("#mcp-tools", DataTable)
        server_table.display = tool_table.display = bool(servers)
        server_table.clear()
        for s in servers:
            name = str(s.get("name", "?"))
            mine = [t for t in tools if t.get("server") == name]
            state = str(s.get("state", "?"))
            server_table.add_row(
                Text(name),
                tint(self, state, _STATE_COLOURS.get(state, "warning")),
                Text(str(s.get("transport") or "—")),
                Text(str(_int(s.get("tools"))), justify="right"),
                Text("on" if s.get("code_mode") else "off"),
                Text(str(sum(_int(t.get("calls")) for t in mine)), justify="right"),
                _count(self, sum(_int(t.get("errors")) for t in mine), "error"),
                _count(self, sum(_int(t.get("refused")) for t in mine), "warning"),
                Text(str(_int(s.get("restarts"))), justify="right"),
                Text(str(s.get("error") or ""), overflow="ellipsis", no_wrap=True),
                key=name,
            )
        tool_table.clear()
        for t in sorted(tools, key=lambda t: (-_int(t.get("calls")), str(t.get("server")), str(t.get("tool")))):
            calls = _int(t.get("calls"))
            seconds = t.get("seconds")
            avg = float(seconds) * 1000 / calls if calls and isinstance(seconds, int | float) else None
            tool_table.add_row(
                Text(str(t.get("server", "?"))),
                Text(str(t.get("tool", "?"))),
                Text(str(calls), justify="right"),
                _count(self, _int(t.get("errors")), "error"),
                _count(self, _int(t.get("refused")), "warning"),
                Text(_size(_int(t.get("bytes"))), justify="right"),
                Text(fmt.millis(avg), justify="right"),
                key=f"{t.get('server')}/{t.get('tool')}",
            )


def summary(state: str, data: dict[str, Any], servers: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """One or two lines: server health and call totals, and what Code Mode saves per request."""
    if state == "loading":
        return "[$text-muted]Loading the MCP gateway…[/]"
    if state == "missing":
        return "[$warning]MCP gateway: not available.[/] This sidecar has no MCP API (an older version)."
    if not servers:
        hint = fmt.plain("[[mcp.servers]]")
        return f"[b]MCP gateway[/] no upstream servers  [$text-muted](add one with {hint} in the config or `claude-sidecar mcp add`)[/]"
    up = sum(1 for s in servers if s.get("state") == "up")
    health = f"[$success]{up} of {len(servers)} up[/]" if up == len(servers) else f"[$error]{up} of {len(servers)} up[/]"
    calls = sum(_int(t.get("calls")) for t in tools)
    errors = sum(_int(t.get("errors")) for t in tools)
    refused = sum(_int(t.get("refused")) for t in tools)
    lines = [f"[b]MCP gateway[/] {health} · {calls} calls · {errors} errors · {refused} refused"]
    tokens = data.get("code_mode_tokens")
    if isinstance(tokens, dict):
        hidden, meta = _int(tokens.get("hidden_tokens")), _int(tokens.get("meta_tokens"))
        saved = hidden - meta
        share = saved / hidden if hidden else 0.0
        lines.append(
            f"[b]Code Mode[/] keeps {_int(tokens.get('tools_hidden'))} tool definitions out: "
            f"[b $success]{fmt.tokens(saved)} tokens saved per request[/] ({fmt.percent(share)}; "
            f"{fmt.tokens(hidden)} hidden, {fmt.tokens(meta)} for the meta-tools)"
        )
    else:
        lines.append("[$text-muted]Code Mode off: every tool definition is sent with each request.[/]")
    return "\n".join(lines)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _count(widget: Any, n: int, colour: str) -> Text:
    text = tint(widget, str(n), colour if n else None)
    text.justify = "right"
    return text


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"
