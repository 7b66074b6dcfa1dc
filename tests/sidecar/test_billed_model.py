"""The gate settles a budget with the price the ledger records: one definition of the
model a request is billed by, whatever mix of translated answer and reported models."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.ledger.pricing import Pricing
from sidecar.pipeline import RequestContext
from sidecar.policy.gate import PolicyGate
from sidecar.policy.model import Policy
from sidecar.protocol.anthropic import RequestHead

MODELS = st.sampled_from([None, "claude-opus-4-8", "claude-haiku-4-5", "gpt-5-mini", "gemini-2.5-pro"])
PRICING = Pricing({})


@given(translated=st.booleans(), asked=MODELS, echoed=MODELS, upstream=MODELS, tokens=st.integers(0, 200_000))
def test_the_gate_prices_a_request_as_the_ledger_does(translated: bool, asked: str | None, echoed: str | None,
                                                      upstream: str | None, tokens: int) -> None:  # fmt: skip
    ctx = RequestContext("/v1/messages", b"{}", RequestHead(model=asked), None, None, headers=CIMultiDictProxy(CIMultiDict()))
    ctx.translated, ctx.upstream_model, ctx.provider = translated, upstream, "anthropic"
    ctx.summary.model = echoed
    ctx.summary.usage.input_tokens = ctx.summary.usage.output_tokens = tokens
    rec = ctx.to_record()
    ledger_cost, _ = PRICING.cost(rec.provider, rec.upstream_model or rec.requested_model, tokens, tokens, 0, 0)  # Ledger.record's pricing
    gate = PolicyGate(Policy(), tz=ZoneInfo("UTC"), pricing=PRICING, key=b"")
    assert gate._cost(ctx) == ledger_cost
