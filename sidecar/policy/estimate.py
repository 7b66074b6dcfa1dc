"""What a request will probably use, before it is sent: the basis of every reservation.

Input tokens are the one size estimate of the body (`sidecar.providers.tokens.estimate`:
4 bytes a token, erring a little high, the safe side for a reservation; images at what the
API charges).

Output tokens are unknowable in advance. Budgets are ceilings, so a budget reservation
covers the worst case the provider can bill (`worst_case`): the estimated input at the
dearest input rate (plain, cache read or cache write: a prompt may be billed all as cache
writes) plus `max_tokens` of output, which the upstream enforces. Rate limits only pace
requests, so their output estimate is the 90th percentile of the model's recent answers,
capped by `max_tokens`; with no history yet, a default (`OutputHistory`). The settlement
after the response corrects both with the usage the provider reports.

An answer that broke off (the client left, the upstream failed) before its final
`message_delta` never reported its output, though the provider bills what it generated, and
a broken upstream may report none at all: such an answer is charged what it delivered
(`delivered_output`) at 4 bytes a token, at most `max_tokens`: a stream's content deltas
less their SSE framing (MessageSummary.delivered_bytes), a whole answer's bytes.
"""

from __future__ import annotations

from collections import deque

from sidecar.ledger.pricing import Pricing
from sidecar.pipeline import RequestContext
from sidecar.protocol.anthropic import Usage
from sidecar.providers import tokens as request_tokens
from sidecar.providers.tokens import BYTES_PER_TOKEN

HISTORY = 64  # recent answers kept per model
PERCENTILE = 0.9
NO_MAX_TOKENS = 64_000  # output ceiling written into a request that sets none (Claude Code's largest)
_PER_MILLION = 1_000_000


def worst_case(pricing: Pricing, model: str | None, tokens_in: int) -> tuple[float, float]:
    """USD of `tokens_in` input tokens at the dearest input rate of `model`, and USD per
    output token (both at the price tier of a `tokens_in` prompt)."""
    cost = pricing.cost
    base = max(
        cost("", model, tokens_in, 0)[0],
        cost("", model, 0, 0, tokens_in, 0)[0],
        cost("", model, 0, 0, 0, tokens_in)[0],
    )
    per_token = (cost("", model, tokens_in, _PER_MILLION)[0] - cost("", model, tokens_in, 0)[0]) / _PER_MILLION
    return base, max(0.0, per_token)


def delivered_output(response_bytes: int, max_tokens: int | None) -> int:
    """The output tokens to charge an answer that delivered `response_bytes` bytes of content
    but reported no final output usage."""
    tokens = -(-max(0, response_bytes) // BYTES_PER_TOKEN)
    return min(tokens, max_tokens) if max_tokens is not None and max_tokens >= 0 else tokens


def charge(ctx: RequestContext, stage: str) -> Usage:
    """The usage `ctx` is charged, made safe in place (so the budget and the ledger book the
    same; idempotent: the gate and the meter both call it, the first one decides). A negative
    count (a broken or lying upstream) is 0, never a refund. An answer from upstream that
    reported no usage at all is charged its request's estimated size and the output it
    delivered; a stream that broke off before its final usage, at least the output it
    delivered. The decision is recorded under `stage`."""
    usage, summary = ctx.summary.usage, ctx.summary
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        if getattr(usage, name) < 0:
            setattr(usage, name, 0)
    if ctx.attempts == 0 or ctx.count_tokens or not summary.started:
        return usage  # nothing went upstream (a cache hit, a refusal), or nothing billable came back
    if not (usage.input_tokens or usage.output_tokens or usage.cache_read_tokens or usage.cache_write_tokens):
        usage.input_tokens = request_tokens.estimate(ctx.body, ctx.json)
        ctx.decide(stage, "estimate", f"no usage reported: charged the input estimate, ~{usage.input_tokens:,} tokens")
    elif summary.stop_reason is not None or not ctx.stream:
        return usage  # complete, or a whole answer that reported its own usage
    sent = summary.delivered_bytes() if ctx.stream else ctx.response_bytes
    delivered = delivered_output(sent, ctx.head.max_tokens)
    if delivered > usage.output_tokens:
        usage.output_tokens = delivered
        ctx.decide(stage, "estimate", f"no final output usage: charged ~{delivered:,} tokens for ~{sent:,} bytes of content delivered")
    return usage


class OutputHistory:
    """The output tokens of each model's recent answers, for the output estimate."""

    def __init__(self, default_tokens: int) -> None:
        self.default_tokens = default_tokens
        self._recent: dict[str, deque[int]] = {}

    def estimate(self, model: str | None, max_tokens: int | None) -> int:
        """The output tokens to reserve for a request to `model` with `max_tokens`."""
        recent = self._recent.get(model or "")
        if recent:
            ordered = sorted(recent)
            guess = ordered[min(len(ordered) - 1, int(len(ordered) * PERCENTILE))]
        else:
            guess = self.default_tokens
        guess = max(1, guess)
        return min(guess, max_tokens) if max_tokens and max_tokens > 0 else guess

    def record(self, model: str | None, output_tokens: int) -> None:
        """Remember the output of a finished answer."""
        recent = self._recent.get(model or "")
        if recent is None:
            recent = self._recent[model or ""] = deque(maxlen=HISTORY)
        recent.append(output_tokens)
