"""Claude Code's own telemetry on a real sidecar: OTLP/HTTP logs and metrics, protobuf and
JSON, the events that matter kept (content attributes not), joined to the ledger's rows of
the same session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from google.protobuf import json_format  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint

from sidecar.gateway.telemetry import decode_logs, decode_metrics
from sidecar.testing.fake_anthropic import FakeAnthropic, Text
from sidecar.testing.governed import body, governed
from sidecar.testing.harness import ledger_rows

SESSION = "5f1c2d3e-0000-4000-8000-00000000abcd"
NOW_NS = 1_796_000_000 * 10**9


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def log(name: str, **attrs: Any) -> LogRecord:
    return LogRecord(time_unix_nano=NOW_NS, body=AnyValue(string_value=f"claude_code.{name}"),
                     attributes=[kv("event.name", name), kv("session.id", SESSION), *(kv(k, v) for k, v in attrs.items())])  # fmt: skip


def logs_export(request_id: str = "req_unknown") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    scope = req.resource_logs.add().scope_logs.add()
    scope.log_records.extend([
        log("api_request", **{"prompt.id": "p1", "model": "claude-opus-4-8", "cost_usd": 0.05, "input_tokens": 1000,
                               "request_id": request_id, "query_source": "main"}),
        log("tool_decision", **{"prompt.id": "p1", "tool_name": "Bash", "decision": "reject", "tool_parameters": '{"command": "rm -rf /"}'}),
        log("user_prompt", prompt="my secret plan", **{"prompt.id": "p1"}),  # not kept
    ])  # fmt: skip
    return req


def metrics_export() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", "claude-code"))
    scope = rm.scope_metrics.add()
    lines = Metric(name="claude_code.lines_of_code.count")
    lines.sum.data_points.extend([
        NumberDataPoint(time_unix_nano=NOW_NS, as_int=10, attributes=[kv("session.id", SESSION), kv("type", "added")]),
        NumberDataPoint(time_unix_nano=NOW_NS, as_int=2, attributes=[kv("session.id", SESSION), kv("type", "removed")]),
    ])  # fmt: skip
    commits = Metric(name="claude_code.commit.count")
    commits.sum.data_points.append(NumberDataPoint(time_unix_nano=NOW_NS, as_int=1, attributes=[kv("session.id", SESSION)]))
    ignored = Metric(name="claude_code.active_time.total")
    ignored.sum.data_points.append(NumberDataPoint(time_unix_nano=NOW_NS, as_double=3.5, attributes=[kv("session.id", SESSION)]))
    scope.metrics.extend([lines, commits, ignored])
    return req


def test_logs_keep_the_events_that_matter_and_no_content() -> None:
    raw = logs_export().SerializeToString()
    for events in (decode_logs(raw, "application/x-protobuf"),
                   decode_logs(json_format.MessageToJson(logs_export()).encode(), "application/json")):  # fmt: skip
        assert [(e.name, e.session_id, e.prompt_id, e.value) for e in events] == [
            ("api_request", SESSION, "p1", 0.05), ("tool_decision", SESSION, "p1", 1.0),
        ]  # fmt: skip
        assert "tool_parameters" not in events[1].attrs and events[1].attrs["decision"] == "reject"
        assert "my secret plan" not in json.dumps([e.attrs for e in events])


def test_metrics_keep_lines_commits_and_drop_the_rest() -> None:
    events = decode_metrics(metrics_export().SerializeToString(), "application/x-protobuf")
    assert [(e.name, e.value, e.session_id) for e in events] == [("lines_added", 10.0, SESSION), ("lines_removed", 2.0, SESSION), ("commit", 1.0, SESSION)]


async def test_telemetry_arrives_and_joins_the_ledger_rows_of_its_session(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.script(Text(usage={"input_tokens": 10_000, "output_tokens": 100}))
    async with governed(fake.url, hermetic_env, "") as sc:
        async with client.post(sc.url + "/v1/messages", json=body(), headers={"x-api-key": "k", "x-claude-code-session-id": SESSION}) as resp:
            assert resp.status == 200
            await resp.read()
        [ledger_row] = await ledger_rows(sc)
        pb = {"content-type": "application/x-protobuf"}
        export = logs_export(str(ledger_row["upstream_request_id"]))
        async with client.post(sc.url + "/v1/logs", data=export.SerializeToString(), headers=pb) as resp:
            assert resp.status == 200
        js = {"content-type": "application/json"}
        async with client.post(sc.url + "/v1/metrics", data=json_format.MessageToJson(metrics_export()), headers=js) as resp:
            assert resp.status == 200 and await resp.json() == {}
        async with client.post(sc.url + "/v1/traces", data=b"\x0a\x00", headers=pb) as resp:
            assert resp.status == 200  # accepted and dropped
        async with client.post(sc.url + "/v1/logs", data=b"\xff\xff not protobuf", headers=pb) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_request_error"
        auth = {"authorization": f"Bearer {sc.token}"}
        async with client.get(sc.url + "/sidecar/v1/claude-code/sessions", headers=auth) as resp:
            report = await resp.json()
        async with client.get(sc.url + "/sidecar/v1/claude-code/spend?by=query_source", headers=auth) as resp:
            spend = await resp.json()
        async with client.get(sc.url + "/sidecar/v1/claude-code/spend?by=a'b", headers=auth) as resp:
            assert resp.status == 400
    [row] = report["sessions"]
    assert row["session_id"] == SESSION and row["requests"] == 1 and row["cost_usd"] == ledger_row["cost_usd"] > 0
    assert (row["api_requests"], row["matched_requests"], row["client_cost_usd"], row["tool_decisions"]) == (1, 1, 0.05, 1)
    # By request id the client's event meets the very usage row: the ledger's dollars, not the client's estimate.
    assert spend["rows"] == [{"key": "main", "requests": 1, "matched_requests": 1, "cost_usd": ledger_row["cost_usd"],
                              "input_tokens": ledger_row["input_tokens"], "output_tokens": ledger_row["output_tokens"]}]  # fmt: skip
    assert (row["lines_added"], row["lines_removed"], row["commits"], row["events"]) == (10, 2, 1, 5)


def test_usage_by_an_attribute_reads_the_stored_telemetry(hermetic_env: Path) -> None:
    from click.testing import CliRunner

    from sidecar.cli import cli
    from sidecar.gateway.telemetry import Event, store
    from sidecar.paths import resolve

    db_file = resolve().db_file
    db_file.parent.mkdir(parents=True, exist_ok=True)
    store(db_file, [Event(1.0, SESSION, "p1", "log", "api_request", 0.25, {"query_source": "subagent", "request_id": "r1"}),
                    Event(2.0, SESSION, "p2", "log", "api_request", 0.5, {"query_source": "main", "request_id": "r2"})])  # fmt: skip
    out = CliRunner().invoke(cli, ["usage", "--by", "query_source", "--json"])
    assert out.exit_code == 0, out.output
    assert [(r["key"], r["cost_usd"], r["matched_requests"]) for r in json.loads(out.output)] == [("main", 0.5, 0), ("subagent", 0.25, 0)]
    table = CliRunner().invoke(cli, ["usage", "--by", "query_source"])
    assert table.exit_code == 0 and "subagent" in table.output and "$   0.2500" in table.output, table.output
    bad = CliRunner().invoke(cli, ["usage", "--by", "a'b"])
    assert bad.exit_code == 2


async def test_exports_are_forwarded_to_the_orgs_collector_as_received(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    from aiohttp import web

    received: list[tuple[str, str, bytes]] = []

    async def collect(request: web.Request) -> web.Response:
        received.append((request.path, request.headers["content-type"], await request.read()))
        return web.Response(status=200)

    collector = web.Application()
    collector.router.add_post("/v1/{signal}", collect)
    runner = web.AppRunner(collector)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        raw = logs_export().SerializeToString()
        async with governed(fake.url, hermetic_env, f'[claude_code]\notlp_forward = "http://127.0.0.1:{port}/"\n') as sc:
            for signal, data in (("logs", raw), ("traces", b"\x0a\x00")):
                async with client.post(f"{sc.url}/v1/{signal}", data=data, headers={"content-type": "application/x-protobuf"}) as resp:
                    assert resp.status == 200
        await runner.cleanup()
        # The collector gone: the client is still answered 200 (the failure is the sidecar's to log).
        async with governed(fake.url, hermetic_env, f'[claude_code]\notlp_forward = "http://127.0.0.1:{port}"\n') as sc:
            async with client.post(f"{sc.url}/v1/logs", data=raw, headers={"content-type": "application/x-protobuf"}) as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
    assert received == [("/v1/logs", "application/x-protobuf", raw), ("/v1/traces", "application/x-protobuf", b"\x0a\x00")]


def test_the_collector_must_be_an_http_url() -> None:
    import pytest

    from sidecar.config import parse
    from sidecar.errors import ConfigError

    with pytest.raises(ConfigError, match=r"claude_code\.otlp_forward: 'collector:4318' is not an http"):
        parse('[claude_code]\notlp_forward = "collector:4318"\n', None, {})
