"""The audit stage: one chained entry per request, with every policy decision taken on it.

The entry holds the request's metadata (the ledger's fields: model, provider, session,
status, tokens, cost, latency, ...) and its decisions (`{"stage", "action", "reason"}`:
allow, deny, redact, warn, strip, reroute, ...). Prompt and response bodies are kept only
when the policy's `log_content` is on; the prompt is then logged as it left the sidecar
(after redaction), the response as the client received it.

Run it last, after the meter: it sees every decision, including those taken while the
response streamed (a refused tool call).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import fields
from typing import Any

import msgspec

from sidecar import __version__
from sidecar.audit.log import HEAD_FILE, AuditLog
from sidecar.config import Config
from sidecar.ledger.journal import Journal, Recovered
from sidecar.ledger.pricing import Pricing
from sidecar.ledger.record import UsageRecord
from sidecar.paths import Paths
from sidecar.pipeline import EventFilter, Reply, RequestContext
from sidecar.policy.model import Policy
from sidecar.storage.batch import BatchWriter

log = logging.getLogger(__name__)

_FIELDS = tuple(f.name for f in fields(UsageRecord) if f.name != "id")  # the id is the entry's request_id
# Logged content nested deeper than this is kept as text: the encoders that journal and chain
# an entry, and the decoders that recover and verify it, give up near 1,000 levels less the
# stack they run on, so a body that was just decodable could not be chained.
CONTENT_DEPTH = 200


class ContentRecorder:
    """A response filter that rebuilds the message the client received (for content logging)."""

    passive = False  # it only observes, but has always had the relay re-encode what it saw
    on_bytes = None

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, list[str]] = {}

    def on_event(self, event: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Note what the event adds; pass it on unchanged."""
        index = data.get("index")
        if event == "message_start" and isinstance(data.get("message"), dict):
            self.message = {k: v for k, v in data["message"].items() if k != "content"}
        elif event == "content_block_start" and isinstance(index, int) and isinstance(data.get("content_block"), dict):
            self._blocks[index] = dict(data["content_block"])
        elif event == "content_block_delta" and isinstance(index, int) and index in self._blocks:
            self._delta(index, data.get("delta"))
        elif event == "message_delta":
            if isinstance(data.get("delta"), dict):
                self.message.update(data["delta"])
            if isinstance(data.get("usage"), dict):
                self.message["usage"] = {**self.message.get("usage", {}), **data["usage"]}
        elif event == "error":
            self.message["error"] = data.get("error")
        return [(event, data)]

    def _delta(self, index: int, delta: Any) -> None:
        if not isinstance(delta, dict):
            return
        block = self._blocks[index]
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + str(delta.get("text", ""))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
        elif kind == "input_json_delta":
            self._json.setdefault(index, []).append(str(delta.get("partial_json", "")))

    def on_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """Keep a whole (non-streaming) answer as it is."""
        self.message = message
        return message

    def on_end(self, complete: bool) -> None:
        """Put the streamed blocks together."""
        if not self._blocks:
            return
        for index, parts in self._json.items():
            try:
                self._blocks[index]["input"] = json.loads("".join(parts) or "{}")
            except (ValueError, RecursionError):
                self._blocks[index]["input"] = "".join(parts)
        self.message["content"] = [self._blocks[i] for i in sorted(self._blocks)]


class AuditStage:
    """Writes one audit entry per request (a Stage); owns the audit log."""

    def __init__(self, audit: AuditLog, pricing: Pricing, log_content: bool, on: bool = True) -> None:
        self.audit = audit
        self.pricing = pricing
        self.log_content = log_content
        self.on = on  # False: the log is open (an org policy may turn it on) but requests are not chained
        self._recorders: dict[str, ContentRecorder] = {}

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """With content logging on, record the response as the client receives it."""
        if self.on and self.log_content and not ctx.count_tokens:
            self._recorders[ctx.id] = ContentRecorder()
        return None

    def on_response(self, ctx: RequestContext) -> EventFilter | None:
        """With content logging on, the recorder of the answer as the client receives it."""
        return self._recorders.get(ctx.id)

    def on_complete(self, ctx: RequestContext) -> None:
        """Chain the request's entry (the request path's last stage journals it)."""
        recorder = self._recorders.pop(ctx.id, None)
        if not ctx.record or not self.on:
            return
        priced = ctx.usage  # the meter's row, already priced: built and priced once per request
        record = priced or ctx.to_record()
        rec = {f: getattr(record, f) for f in _FIELDS}  # dataclasses.asdict is 10x slower
        if priced is None:
            model = rec["upstream_model"] or rec["requested_model"]
            rec["cost_usd"], _ = self.pricing.cost(
                rec["provider"], model, rec["input_tokens"], rec["output_tokens"], rec["cache_read_tokens"], rec["cache_write_tokens"]
            )
        rec["decisions"] = [{"stage": d.stage, "action": d.action, "reason": d.reason} for d in ctx.decisions]
        if self.log_content:
            rec["content"] = _content(ctx.body, recorder.message if recorder else None)
        self.audit.hold("request", rec, ctx.id)  # journaled now, chained once the answer went out

    def on_answered(self, ctx: RequestContext) -> None:
        """Chain the entries held until the answer went out (sidecar.audit.log)."""
        self.audit.settle()

    def apply_policy(self, policy: Policy) -> None:
        """A new policy is in force (a central push, a reload): chain a `policy` entry naming
        it, and chain requests (and their content) from now on as it says."""
        self.log_content = policy.access.log_content
        self.on = policy.access.audit
        self.audit.append(
            "policy",
            {"version": policy.version, "source": policy.source, "digest": policy.digest, "log_content": self.log_content,
             "audit": self.on},
        )  # fmt: skip

    async def close(self) -> None:
        """Chain a `stop` entry, write everything, close the log."""
        self.audit.append("stop", {"pid": os.getpid()})
        await self.audit.close()


def _content(body: bytes, response: dict[str, Any] | None) -> dict[str, Any]:
    """The logged request and response; a part nested too deeply to chain is kept as text."""
    request = _body(body)
    if not _within(request, CONTENT_DEPTH):
        request = body.decode("utf-8", errors="replace")
    if response is not None and not _within(response, CONTENT_DEPTH):
        response = {"error": f"not logged: the response is nested more than {CONTENT_DEPTH} levels deep"}
    return {"request": request, "response": response}


def _body(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return body.decode("utf-8", errors="replace")


def _within(value: Any, depth: int) -> bool:
    """Whether `value` nests lists and dicts at most `depth` levels deep (iterative)."""
    todo = [(value, 0)]
    while todo:
        v, d = todo.pop()
        if type(v) is dict:
            v = v.values()
        elif type(v) is not list:
            continue
        if d == depth:
            return False
        todo.extend((x, d + 1) for x in v if type(x) is dict or type(x) is list)
    return True


async def open_audit(
    cfg: Config,
    paths: Paths,
    pricing: Pricing,
    policy: Policy,
    journal: Journal | None = None,
    recovered: Recovered | None = None,
    keep_open: bool = False,
    writer: BatchWriter | None = None,
) -> AuditStage | None:
    """The audit stage, its log opened and a `start` entry chained; None when the policy
    turns the audit log off, unless `keep_open` (an enrolled sidecar: the org's policy,
    installed later, may turn it on; until then requests are not chained). `writer`: the
    daemon's one batch writer."""
    if not policy.access.audit and not keep_open:
        return None
    audit = AuditLog(paths.db_file, paths.data_dir / HEAD_FILE, journal=journal, writer=writer)
    await audit.start()
    last = audit.last
    if last is not None and last.kind != "stop":
        # The previous run died (SIGKILL, OOM, power): say so in the chain itself, so that a
        # crash reads as a crash in `audit verify`, never as tampering.
        log.warning("the previous run ended without a stop entry (after #%d); recording an unclean shutdown", last.seq)
        found = recovered.to_dict() if recovered is not None else None
        audit.append("unclean_shutdown", {"after": {"seq": last.seq, "kind": last.kind, "ts": last.ts}, "recovered": found})
    audit.append(
        "start",
        {
            "version": __version__,
            "pid": os.getpid(),
            "config": str(cfg.source) if cfg.source else None,
            "policy": {"version": policy.version, "source": policy.source, "digest": policy.digest},
            "log_content": policy.access.log_content,
        },
    )
    await audit.flush()  # the crash and the start are on disk before the first request
    return AuditStage(audit, pricing, policy.access.log_content, on=policy.access.audit)
