"""Claude Code's own OpenTelemetry at `/v1/logs`, `/v1/metrics` and `/v1/traces`, joined to spend.

Claude Code exports OTLP/HTTP, protobuf or JSON (decoded with `opentelemetry-proto`). The
events that matter are kept in the `claude_code_events` table of the usage store: from the
logs `api_request`, `api_error`, `tool_result`, `tool_decision` and compactions; from the
metrics the lines of code (added, removed), commits, pull requests and the client's own cost.
Each row keeps the session id and prompt id the client attaches, so `sessions()` joins it to
the usage rows of the same session; an `api_request` event also names the upstream's
request id, which matches the usage row of that very request (`spend_by`). Attributes that can hold content (prompts, tool input)
are not kept. Traces are accepted and dropped. With `[claude_code] otlp_forward` every export
(traces too) is also sent on, as received, to the org's collector. Every well-formed export is answered 200,
whatever was kept (a 404 makes the client's exporter log an error on every flush).

Claude Code sends its metrics as deltas by default, so summing a metric's rows gives its total.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sidecar.appkeys import CONFIG, PATHS
from sidecar.errors import InvalidRequest
from sidecar.ledger.store import open_db
from sidecar.web_errors import error_response

log = logging.getLogger(__name__)

KEPT_LOGS = frozenset({"api_request", "api_error", "tool_result", "tool_decision", "compaction", "auto_compact"})
KEPT_METRICS = {
    "claude_code.lines_of_code.count": "lines_of_code",
    "claude_code.commit.count": "commit",
    "claude_code.pull_request.count": "pull_request",
    "claude_code.cost.usage": "cost",
}
CONTENT_ATTRS = frozenset({"prompt", "tool_parameters", "tool_input", "user.email"})


@dataclass(frozen=True)
class Event:
    """One kept telemetry event."""

    ts: float
    session_id: str | None
    prompt_id: str | None
    kind: str  # log | metric
    name: str
    value: float
    attrs: dict[str, Any]


def _value(v: Any) -> Any:
    """An OTLP AnyValue as plain data."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs if kv.key not in CONTENT_ATTRS}


def _number(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _parse(message: Any, body: bytes, content_type: str) -> Any:
    from google.protobuf import json_format  # type: ignore[import-untyped]
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    try:
        if content_type.startswith("application/json"):
            json_format.Parse(body.decode("utf-8"), message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError) as e:
        raise InvalidRequest(f"the OTLP export could not be decoded: {e}") from None
    return message


def decode_logs(body: bytes, content_type: str) -> list[Event]:
    """The kept events of an OTLP logs export."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = _parse(ExportLogsServiceRequest(), body, content_type)
    out = []
    for rl in req.resource_logs:
        resource = _attrs(rl.resource.attributes)
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                attrs = {**resource, **_attrs(rec.attributes)}
                body_name = _value(rec.body) if rec.HasField("body") else None
                name = str(attrs.get("event.name") or body_name or "").removeprefix("claude_code.")
                if name not in KEPT_LOGS:
                    continue
                ts = (rec.time_unix_nano or rec.observed_time_unix_nano) / 1e9 or time.time()
                cost = _number(attrs.get("cost_usd"))
                out.append(Event(ts, _str(attrs.get("session.id")), _str(attrs.get("prompt.id")), "log", name,
                                 1.0 if cost is None else cost, attrs))  # fmt: skip
    return out


def decode_metrics(body: bytes, content_type: str) -> list[Event]:
    """The kept data points of an OTLP metrics export."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    req = _parse(ExportMetricsServiceRequest(), body, content_type)
    out = []
    for rm in req.resource_metrics:
        resource = _attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                name = KEPT_METRICS.get(metric.name)
                which = metric.WhichOneof("data")
                if name is None or which not in ("sum", "gauge"):
                    continue
                for p in getattr(metric, which).data_points:
                    attrs = {**resource, **_attrs(p.attributes)}
                    value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                    if name == "lines_of_code" and attrs.get("type") in ("added", "removed"):
                        name_ = f"lines_{attrs['type']}"
                    else:
                        name_ = name
                    out.append(Event(p.time_unix_nano / 1e9 or time.time(), _str(attrs.get("session.id")),
                                     _str(attrs.get("prompt.id")), "metric", name_, value, attrs))  # fmt: skip
    return out


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def store(db_file: Path, events: list[Event]) -> None:
    """Append `events` to the usage store."""
    db = open_db(db_file)
    try:
        with db.conn:
            db.conn.executemany(
                "INSERT INTO claude_code_events (ts, session_id, prompt_id, kind, name, value, attrs) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e.ts, e.session_id, e.prompt_id, e.kind, e.name, e.value, json.dumps(e.attrs, default=str)) for e in events],
            )
    finally:
        db.conn.close()


def sessions(db_file: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """Per Claude Code session: the ledger's requests and cost next to the client's telemetry."""
    db = open_db(db_file)
    try:
        rows = db.execute(
            """
            WITH ev AS (
              SELECT session_id,
                SUM(CASE WHEN kind = 'log' AND name = 'api_request' THEN 1 ELSE 0 END) AS api_requests,
                SUM(CASE WHEN kind = 'log' AND name = 'api_request' THEN value ELSE 0 END) AS client_cost_usd,
                SUM(CASE WHEN name = 'tool_decision' THEN 1 ELSE 0 END) AS tool_decisions,
                SUM(CASE WHEN name = 'tool_result' THEN 1 ELSE 0 END) AS tool_results,
                SUM(CASE WHEN name = 'lines_added' THEN value ELSE 0 END) AS lines_added,
                SUM(CASE WHEN name = 'lines_removed' THEN value ELSE 0 END) AS lines_removed,
                SUM(CASE WHEN name = 'commit' THEN value ELSE 0 END) AS commits,
                SUM(CASE WHEN name = 'pull_request' THEN value ELSE 0 END) AS pull_requests,
                COUNT(*) AS events
              FROM claude_code_events WHERE session_id IS NOT NULL AND ts >= ? GROUP BY session_id
            ), u AS (
              SELECT session_id, COUNT(*) AS requests, COALESCE(SUM(cost_usd), 0) AS cost_usd
              FROM usage WHERE session_id IS NOT NULL AND ts >= ? GROUP BY session_id
            ), m AS (
              SELECT e.session_id, COUNT(*) AS matched FROM claude_code_events e
              JOIN usage x ON x.upstream_request_id = json_extract(e.attrs, '$.request_id')
              WHERE e.kind = 'log' AND e.name = 'api_request' AND e.ts >= ? GROUP BY e.session_id
            )
            SELECT ev.session_id, COALESCE(u.requests, 0), COALESCE(u.cost_usd, 0), ev.api_requests, COALESCE(m.matched, 0),
                   ev.client_cost_usd, ev.tool_decisions, ev.tool_results, ev.lines_added, ev.lines_removed, ev.commits,
                   ev.pull_requests, ev.events
            FROM ev LEFT JOIN u ON u.session_id = ev.session_id LEFT JOIN m ON m.session_id = ev.session_id
            ORDER BY ev.session_id
            """,
            [since, since, since],
        ).fetchall()
    finally:
        db.conn.close()
    keys = ("session_id", "requests", "cost_usd", "api_requests", "matched_requests", "client_cost_usd", "tool_decisions", "tool_results",
            "lines_added", "lines_removed", "commits", "pull_requests", "events")  # fmt: skip
    return [dict(zip(keys, r, strict=True)) for r in rows]


ATTRIBUTE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def spend_by(db_file: Path, attribute: str, since: float = 0.0) -> list[dict[str, Any]]:
    """Claude Code's model requests grouped by one attribute of its `api_request` events
    (`query_source` is main, sdk, subagent, ...): requests, the ledger's dollars for the
    requests it matched by request id (the client's own estimate for the others), tokens."""
    if not ATTRIBUTE.fullmatch(attribute):
        raise InvalidRequest(f"{attribute!r} is not an attribute name")
    db = open_db(db_file)
    try:
        rows = db.execute(
            f"""
            SELECT json_extract(e.attrs, '$."{attribute}"') AS key, COUNT(*),
                   SUM(CASE WHEN u.id IS NOT NULL THEN 1 ELSE 0 END),
                   COALESCE(SUM(COALESCE(u.cost_usd, e.value)), 0),
                   COALESCE(SUM(u.input_tokens), 0), COALESCE(SUM(u.output_tokens), 0)
            FROM claude_code_events e
            LEFT JOIN usage u ON u.upstream_request_id = json_extract(e.attrs, '$.request_id')
            WHERE e.kind = 'log' AND e.name = 'api_request' AND e.ts >= ?
            GROUP BY key ORDER BY 4 DESC
            """,
            [since],
        ).fetchall()
    finally:
        db.conn.close()
    keys = ("key", "requests", "matched_requests", "cost_usd", "input_tokens", "output_tokens")
    return [dict(zip(keys, r, strict=True)) for r in rows]


DECODERS = {"logs": decode_logs, "metrics": decode_metrics}


async def receive(request: web.Request) -> web.Response:
    """`POST /v1/{logs,metrics,traces}`: keep what matters, answer 200 (an empty export response)."""
    signal = request.path.rsplit("/", 1)[1]
    body = await request.read()
    decode = DECODERS.get(signal)
    if decode is not None and body:
        try:
            events = decode(body, request.headers.get("content-type", "application/x-protobuf"))
        except InvalidRequest as e:
            return error_response(e)
        except ImportError:
            log.warning("Claude Code telemetry dropped: opentelemetry-proto is not installed (pip install 'claude-sidecar[otel]')")
            events = []
        if events:
            await asyncio.to_thread(store, request.app[PATHS].db_file, events)
    forward = request.app[CONFIG].claude_code.otlp_forward
    if forward is not None and body:
        await _forward(request.app[FORWARDER], f"{forward}/v1/{signal}", body, request.headers.get("content-type"))
    if request.headers.get("content-type", "").startswith("application/json"):
        return web.json_response({})
    return web.Response(body=b"", content_type="application/x-protobuf")


FORWARD_TIMEOUT = 5.0
FORWARDER = web.AppKey("claude_code_otlp_forwarder", aiohttp.ClientSession)


async def _forward(session: aiohttp.ClientSession, url: str, body: bytes, content_type: str | None) -> None:
    """Send one export on to the org's collector as received; a failure is logged, never the client's."""
    try:
        async with session.post(url, data=body, headers={"content-type": content_type or "application/x-protobuf"},
                                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)) as resp:  # fmt: skip
            if resp.status >= 300:
                log.warning("the OTLP collector %s answered %s", url, resp.status)
    except (aiohttp.ClientError, TimeoutError) as e:
        log.warning("the OTLP collector %s is unreachable: %s", url, e)


async def spend_api(request: web.Request) -> web.Response:
    """Control API: `GET /sidecar/v1/claude-code/spend?by=ATTRIBUTE[&since=EPOCH]`."""
    try:
        since = float(request.query.get("since", "0"))
        rows = await asyncio.to_thread(spend_by, request.app[PATHS].db_file, request.query.get("by", "query_source"), since)
    except ValueError:
        return error_response(InvalidRequest("since must be epoch seconds"))
    except InvalidRequest as e:
        return error_response(e)
    return web.json_response({"by": request.query.get("by", "query_source"), "rows": rows})


async def sessions_api(request: web.Request) -> web.Response:
    """Control API: `GET /sidecar/v1/claude-code/sessions[?since=EPOCH]`."""
    try:
        since = float(request.query.get("since", "0"))
    except ValueError:
        return error_response(InvalidRequest("since must be epoch seconds"))
    return web.json_response({"sessions": await asyncio.to_thread(sessions, request.app[PATHS].db_file, since)})


def add_routes(app: web.Application) -> None:
    """The OTLP endpoints and the joined report (and, with [claude_code] otlp_forward, the
    client that forwards to the org's collector)."""

    async def forwarder(app: web.Application) -> AsyncIterator[None]:
        if app[CONFIG].claude_code.otlp_forward is None:
            yield
            return
        async with aiohttp.ClientSession() as session:
            app[FORWARDER] = session
            yield

    app.cleanup_ctx.append(forwarder)
    for signal in ("metrics", "logs", "traces"):
        app.router.add_post(f"/v1/{signal}", receive)
    app.router.add_get("/sidecar/v1/claude-code/sessions", sessions_api)
    app.router.add_get("/sidecar/v1/claude-code/spend", spend_api)
