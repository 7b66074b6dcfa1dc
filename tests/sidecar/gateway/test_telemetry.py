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
from tests.sidecar.policy.conftest import body, governed

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


def logs_export() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    scope = req.resource_logs.add().scope_logs.add()
    scope.log_records.extend([
        log("api_request", **{"prompt.id": "p1", "model": "claude-opus-4-8", "cost_usd": 0.05, "input_tokens": 1000}),
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
        pb = {"content-type": "application/x-protobuf"}
        async with client.post(sc.url + "/v1/logs", data=logs_export().SerializeToString(), headers=pb) as resp:
            assert resp.status == 200
        js = {"content-type": "application/json"}
        async with client.post(sc.url + "/v1/metrics", data=json_format.MessageToJson(metrics_export()), headers=js) as resp:
            assert resp.status == 200 and await resp.json() == {}
        async with client.post(sc.url + "/v1/traces", data=b"\x0a\x00", headers=pb) as resp:
            assert resp.status == 200  # accepted and dropped
        async with client.post(sc.url + "/v1/logs", data=b"\xff\xff not protobuf", headers=pb) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_request_error"
        from sidecar.proxy.keys import LEDGER

        await sc.app[LEDGER].flush()
        async with client.get(sc.url + "/sidecar/v1/claude-code/sessions", headers={"authorization": f"Bearer {sc.token}"}) as resp:
            report = await resp.json()
    [row] = report["sessions"]
    assert row["session_id"] == SESSION and row["requests"] == 1 and row["cost_usd"] > 0
    assert (row["api_requests"], row["client_cost_usd"], row["tool_decisions"]) == (1, 0.05, 1)
    assert (row["lines_added"], row["lines_removed"], row["commits"], row["events"]) == (10, 2, 1, 5)
