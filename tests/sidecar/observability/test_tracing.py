"""Spans over OTLP/HTTP to a receiver on loopback, with the GenAI attributes, checked against the ledger."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlite_utils
from aiohttp import web

from sidecar.appkeys import LEDGER, STAGES
from sidecar.observability.tracing import Tracing, ulid_int
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_behaviours import Text
from sidecar.testing.harness import anthropic_config, sidecar_in_process

trace_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

MODEL = "claude-trace-1"
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class Receiver:
    """An OTLP/HTTP traces endpoint that keeps every span it is sent, as plain dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.url = ""

    async def traces(self, request: web.Request) -> web.Response:
        req = trace_pb2.ExportTraceServiceRequest.FromString(await request.read())
        for rs in req.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append({"name": s.name, "kind": s.kind, "trace_id": s.trace_id.hex(),
                                       "span_id": s.span_id.hex(), "status": s.status.code, "resource": resource,
                                       "attrs": {a.key: _value(a.value) for a in s.attributes}})
        body = trace_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", r.traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/traces"
    try:
        yield r
    finally:
        await runner.cleanup()


def _body(text: str, stream: bool = False, model: str = MODEL) -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": text}]}


async def test_spans_reach_an_otlp_receiver_with_the_genai_attributes(fake: FakeAnthropic, receiver: Receiver,
                                                                      client: aiohttp.ClientSession,
                                                                      hermetic_env: Path) -> None:
    extra = (f'[pricing."{MODEL}"]\ninput = 3.0\noutput = 15.0\ncache_read = 0.3\ncache_write = 3.75\n'
             f'[policy]\ndeny_models = ["claude-denied-*"]\n'
             f'[observability]\notlp_endpoint = "{receiver.url}"\nservice_name = "sidecar-under-test"\n')
    fake.script(Text("hello there", usage={"cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}),
                Text("a streamed reply"), Text("a continued trace"))
    hdrs = {"x-api-key": "client-key"}
    async with sidecar_in_process(anthropic_config(fake.url, extra), hermetic_env) as sc:
        assert any(isinstance(s, Tracing) for s in sc.app[STAGES])
        for body, more in ((_body("one"), {}), (_body("two", stream=True), {}),
                           (_body("three"), {"traceparent": f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"}),
                           (_body("four", model="claude-denied-2"), {})):
            async with client.post(sc.url + "/v1/messages", json=body, headers={**hdrs, **more}) as resp:
                await resp.read()
        await sc.app[LEDGER].flush()
        db = sqlite_utils.Database(sc.paths.db_file)
        rows = {r["id"]: r for r in db.query("select * from usage")}
        db.conn.close()
    # The sidecar's shutdown exported what was pending.
    assert len(receiver.spans) == 4, receiver.spans
    by_id = {s["attrs"]["sidecar.request_id"]: s for s in receiver.spans}
    assert set(by_id) == set(rows)
    upstream = [dict((k.lower(), v) for k, v in r.headers) for r in fake.requests]
    sent_parents = [h.get("traceparent") for h in upstream]
    assert len(sent_parents) == 3 and all(sent_parents)

    for rid, row in rows.items():
        span = by_id[rid]
        a = span["attrs"]
        assert span["resource"]["service.name"] == "sidecar-under-test"
        assert span["kind"] == 3  # SPAN_KIND_CLIENT
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == row["requested_model"]
        assert a["gen_ai.usage.input_tokens"] == row["input_tokens"] + row["cache_read_tokens"] + row["cache_write_tokens"]
        assert a["gen_ai.usage.output_tokens"] == row["output_tokens"]
        assert a["gen_ai.usage.cache_read.input_tokens"] == row["cache_read_tokens"]
        assert a["sidecar.outcome"] == row["outcome"]
        assert a["http.response.status_code"] == row["status"]
        assert a["sidecar.cost_usd"] == pytest.approx(row["cost_usd"] or 0.0)
        if row["outcome"] == "ok":
            assert a["gen_ai.provider.name"] == "anthropic"
            assert a["gen_ai.response.model"] == row["upstream_model"]
            assert a["gen_ai.response.finish_reasons"] == [row["stop_reason"]]
            assert a["sidecar.route"] == row["route"] and a["sidecar.target"] == row["target"]
            assert a["sidecar.attempts"] == row["attempts"] >= 1
            assert a["gen_ai.request.max_tokens"] == 64
            # The upstream got this span as its parent.
            assert any(p.startswith(f"00-{span['trace_id']}-{span['span_id']}-") for p in sent_parents)
        else:
            assert a["error.type"] == row["error_type"] and span["status"] == 2  # STATUS_CODE_ERROR
        # A trace continues the client's, else its id is the request id.
        continued = row["requested_model"] == MODEL and span["trace_id"] == PARENT_TRACE
        assert continued or span["trace_id"] == f"{ulid_int(rid):032x}"
    assert sum(s["trace_id"] == PARENT_TRACE for s in receiver.spans) == 1
    assert rows[next(r for r in rows if rows[r]["cache_read_tokens"])]["cache_read_tokens"] == 100


async def test_without_an_endpoint_there_is_no_span_and_no_traceparent(fake: FakeAnthropic,
                                                                       client: aiohttp.ClientSession,
                                                                       hermetic_env: Path) -> None:
    async with sidecar_in_process(anthropic_config(fake.url), hermetic_env) as sc:
        assert not any(isinstance(s, Tracing) for s in sc.app[STAGES])
        async with client.post(sc.url + "/v1/messages", json=_body("x"), headers={"x-api-key": "k"}) as resp:
            await resp.read()
    assert "traceparent" not in {k.lower() for k, _ in fake.requests[0].headers}


def test_ulid_to_trace_id() -> None:
    assert ulid_int("00000000000000000000000001") == 1
    assert ulid_int("7ZZZZZZZZZZZZZZZZZZZZZZZZZ") == 2**128 - 1
    assert json.dumps(f"{ulid_int('01ARZ3NDEKTSV4RRFFQ69G5FAV'):032x}") == '"01563e3ab5d3d6764c61efb99302bd5b"'
