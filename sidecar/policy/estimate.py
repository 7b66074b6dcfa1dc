"""What a request will probably use, before it is sent: the basis of every reservation.

Input tokens are counted from the body at 4 bytes a token. Claude Code's own `/context`
puts its 76.6 KB first turn at 17.9k tokens (4.3 bytes a token: JSON punctuation and
schema keys are cheap), so the count errs a little high, which is the safe side for a
reservation. Images are counted at what the API charges for a full-size one, not at the
size of their base64.

Output tokens are unknowable in advance. Budgets are ceilings, so a budget reservation
covers the worst case the provider can bill (`worst_case`): the estimated input at the
dearest input rate (plain, cache read or cache write: a prompt may be billed all as cache
writes) plus `max_tokens` of output, which the upstream enforces. Rate limits only pace
requests, so their output estimate is the 90th percentile of the model's recent answers,
capped by `max_tokens`; with no history yet, a default (`OutputHistory`). The settlement
after the response corrects both with the usage the provider reports.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

from sidecar.ledger.pricing import Pricing

BYTES_PER_TOKEN = 4
IMAGE_TOKENS = 1600  # a ~1.15 megapixel image, the largest the API keeps unscaled
HISTORY = 64  # recent answers kept per model
PERCENTILE = 0.9
NO_MAX_TOKENS = 64_000  # output ceiling written into a request that sets none (Claude Code's largest)
_PER_MILLION = 1_000_000


def input_tokens(body: bytes, parsed: Callable[[], dict[str, Any]]) -> int:
    """The input tokens of a request body, estimated (see the module docstring); `parsed`
    gives the decoded body, and is called only when the body holds base64 data."""
    n = len(body)
    if b'"base64"' not in body:
        return max(1, math.ceil(n / BYTES_PER_TOKEN))
    images, encoded = _base64_blocks(parsed())
    return max(1, math.ceil((n - encoded) / BYTES_PER_TOKEN) + images * IMAGE_TOKENS)


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


def _base64_blocks(obj: Any) -> tuple[int, int]:
    """How many base64 images a request holds, and the bytes of base64 image data in it.

    Base64 documents (PDFs) stay counted by their size: their text is what is billed.
    """
    images = encoded = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            source = item.get("source")
            if item.get("type") == "image" and isinstance(source, dict) and isinstance(source.get("data"), str):
                images += 1
                encoded += len(source["data"])
                continue
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return images, encoded


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
