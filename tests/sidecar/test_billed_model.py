"""The gate settles a budget with the price the ledger records: one definition of the
model a request is billed by, whatever mix of translated answer and reported models."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.events import EventBus
from sidecar.ledger.pricing import Pricing
from sidecar.ledger.writer import Ledger
from sidecar.pipeline import RequestContext
from sidecar.policy.gate import PolicyGate
from sidecar.policy.model import Policy
from sidecar.protocol.anthropic import RequestHead
from sidecar.proxy.stages import Meter

# A gateway's own spelling of a model has no price: an answer naming it is priced by the model asked.
MODELS = st.sampled_from([None, "claude-opus-4-8", "claude-haiku-4-5", "gpt-5-mini", "gemini-2.5-pro", "gateway/claude-opus-4-8-preview"])
PRICING = Pricing({})


@settings(deadline=None)  # the first example loads the price data
@example(translated=False, asked="claude-opus-4-8", echoed="gateway/claude-opus-4-8-preview", upstream="claude-opus-4-8", tokens=1000)
@given(translated=st.booleans(), asked=MODELS, echoed=MODELS, upstream=MODELS, tokens=st.integers(0, 200_000))
def test_the_gate_prices_a_request_as_the_ledger_does(translated: bool, asked: str | None, echoed: str | None,
                                                      upstream: str | None, tokens: int) -> None:  # fmt: skip
    ctx = RequestContext("/v1/messages", b"{}", RequestHead(model=asked), None, None, headers=CIMultiDictProxy(CIMultiDict()))
    ctx.translated, ctx.upstream_model, ctx.provider = translated, upstream, "anthropic"
    ctx.summary.model = echoed
    ctx.summary.usage.input_tokens = ctx.summary.usage.output_tokens = tokens
    Meter(Ledger(Path("unused.db"), PRICING), EventBus()).on_complete(ctx)  # prices the row; nothing is written
    assert ctx.usage is not None
    gate = PolicyGate(Policy(), tz=ZoneInfo("UTC"), pricing=PRICING, key=b"")
    assert gate._cost(ctx) == ctx.usage.cost_usd
    if tokens and not translated and upstream == "claude-opus-4-8" and echoed == "gateway/claude-opus-4-8-preview":
        assert ctx.usage.cost_usd > 0  # the gateway's name is unpriced: the model asked is what it costs
