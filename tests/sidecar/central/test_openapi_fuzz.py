"""schemathesis against the served OpenAPI document: no 5xx, every answer matches its schema.

The server runs as a child process (on SQLite and on PostgreSQL); each operation gets a
bounded number of generated requests with the right kind of token for its security scheme.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from sidecar.ledger.record import new_ulid
from sidecar.testing.central import CentralProcess

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 10


def _post(url: str, body: Any, token: str | None = None) -> Any:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _populate(base: str, admin: str, device: str) -> None:
    """Something in every list, so the fuzzed answers are checked against full row schemas."""
    _post(base + "/v1/admin/teams", {"name": "core"}, admin)
    _post(base + "/v1/admin/developers", {"email": "two@example.com", "team": "core"}, admin)
    _post(base + "/v1/admin/policy", {"document": {"pools": {"daily_usd": 50}, "budget": {"daily_usd": 5}}, "comment": "x"}, admin)
    now = time.time()
    records = [{"id": new_ulid(now), "ts": now, "model": "claude-haiku-4-5", "route": "default", "input_tokens": 10,
                "output_tokens": 5, "cost_usd": 0.01}, {"id": new_ulid(now), "ts": now, "model": "m"}]  # fmt: skip
    _post(base + "/v1/usage", {"records": records}, device)
    _post(base + "/v1/leases", {"amount_usd": 1}, device)


def _runner(op: Any, base: str, session: requests.Session, headers: dict[str, str]) -> Any:
    """A hypothesis test of one operation, with or without its credential."""

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=op.as_strategy(), use_auth=st.booleans())
    def run(case: Any, use_auth: bool) -> None:
        case.call_and_validate(base_url=base, session=session, headers=headers if use_auth else {}, checks=CHECKS, timeout=10)

    return run


def _fuzz(base: str, admin: str, device: str) -> int:
    with urllib.request.urlopen(base + "/openapi.json", timeout=10) as r:
        doc = json.loads(r.read())
    schema = schemathesis.openapi.from_dict(doc)
    session = requests.Session()
    ran = 0
    for result in schema.get_all_operations():
        op = result.ok()
        security = op.definition.raw.get("security") or []
        kind = next(iter(security[0]), None) if security else None
        headers = {"authorization": f"Bearer {admin if kind == 'admin' else device}"} if kind else {}
        if op.path == "/v1/device" or (op.method.upper() == "DELETE" and "{" in op.path):
            continue  # revoking the fuzzing credentials would end the run; revocation has its own tests

        _runner(op, base, session, headers)()
        ran += 1
    session.close()
    return ran


async def test_the_served_openapi_document_holds_under_fuzzing(db_url: str) -> None:
    async with CentralProcess(
        db_url, "--max-wait", "0.2", "--enroll-per-minute", "100000", "--auth-failures-per-minute", "100000"
    ) as server:
        assert server.bootstrap_token
        admin = server.bootstrap_token
        base = server.url
        dev = await asyncio.to_thread(_post, base + "/v1/admin/developers", {"email": "fuzz@example.com"}, admin)
        enr = await asyncio.to_thread(_post, base + "/v1/admin/enrollment-tokens", {"developer": dev["id"]}, admin)
        device = (await asyncio.to_thread(_post, base + "/v1/enroll", {"token": enr["token"]}))["credential"]
        await asyncio.to_thread(_populate, base, admin, device)
        ran = await asyncio.to_thread(_fuzz, base, admin, device)
        assert ran >= 20
