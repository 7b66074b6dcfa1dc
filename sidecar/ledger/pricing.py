"""What a request cost: genai-prices' bundled data, config overrides, and a per-model cache.

Pricing a request through genai-prices takes ~0.3 ms (and loading its data ~0.4 s), too
slow for every request, so each (provider, model) is resolved once into plain float rates
and ``cost()`` is a dict lookup and a few multiplications (~1.5 us). The library's bundled
snapshot is used as is: nothing here fetches prices from the network.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.ledger.config import PriceOverride

log = logging.getLogger(__name__)

_SUFFIX_RE = re.compile(r"\[[^\]]*\]$")  # Claude Code's `claude-opus-4-8[1m]`
_DAY = 86400.0
_TIME_OF_DAY_TTL = 60.0


@dataclass(frozen=True)
class Rate:
    """USD per million tokens, switching to a tier price once total input passes `start`."""

    base: float
    tiers: tuple[tuple[int, float], ...] = ()  # (start, price), ascending

    def at(self, total_input: int) -> float:
        """The price that applies to a request with `total_input` input tokens."""
        # Cliff tiers, as genai-prices computes them: crossing a tier reprices every token.
        for start, price in reversed(self.tiers):
            if total_input > start:
                return price
        return self.base


@dataclass(frozen=True)
class Rates:
    """A model's resolved prices, USD per million tokens of each kind."""

    input: Rate
    output: Rate
    cache_read: Rate
    cache_write: Rate
    expires: float = float("inf")  # epoch seconds after which to resolve again


class Pricing:
    """Prices requests from config overrides first, then the genai-prices data."""

    def __init__(self, overrides: Mapping[str, PriceOverride] | None = None) -> None:
        overrides = overrides or {}
        self._exact = {m: _override_rates(p) for m, p in overrides.items() if not m.endswith("*")}
        # Longest prefix first, so `claude-opus-4-*` beats `claude-*`.
        self._globs = sorted(
            ((m[:-1], _override_rates(p)) for m, p in overrides.items() if m.endswith("*")),
            key=lambda item: -len(item[0]),
        )
        self._cache: dict[tuple[str, str], Rates | None] = {}
        self._warned: set[tuple[str, str]] = set()

    def cost_of_first(
        self,
        provider: str,
        models: Sequence[str],
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> tuple[float, bool]:
        """`cost` by the first of `models` that has a price (0 when none has)."""
        for model in models:
            usd, known = self.cost(provider, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
            if known:
                return usd, True
        return 0.0, False

    def cost(
        self,
        provider: str,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> tuple[float, bool]:
        """USD for one request, and whether the model had a price (unknown models cost 0)."""
        if not model:
            return 0.0, False
        key = (provider, model)
        try:
            rates = self._cache[key]
        except KeyError:
            rates = self._cache[key] = self._resolve(provider, model)
        else:
            if rates is not None and rates.expires <= time.time():
                rates = self._cache[key] = self._resolve(provider, model)
        if rates is None:
            if key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "no price known for model %r (provider %r); counting it as $0", model, provider
                )
            return 0.0, False
        total_input = input_tokens + cache_read_tokens + cache_write_tokens
        usd = (
            input_tokens * rates.input.at(total_input)
            + output_tokens * rates.output.at(total_input)
            + cache_read_tokens * rates.cache_read.at(total_input)
            + cache_write_tokens * rates.cache_write.at(total_input)
        ) / 1_000_000
        return usd, True

    def warm(self, models: Iterable[tuple[str, str]] = ()) -> None:
        """Load the price data and resolve `models` now (~0.4 s: call it in a worker thread)."""
        # Any lookup loads genai-prices' bundled data; after that a new model takes ~0.5 ms.
        _library_rates("anthropic", "claude-sonnet-4-5")
        for provider, model in models:
            self._cache[(provider, model)] = self._resolve(provider, model)

    def _resolve(self, provider: str, model: str) -> Rates | None:
        name = _SUFFIX_RE.sub("", model.strip())
        for candidate in (model, name):
            if candidate in self._exact:
                return self._exact[candidate]
        for prefix, rates in self._globs:
            if name.startswith(prefix):
                return rates
        return _library_rates(provider, name)


def _override_rates(p: PriceOverride) -> Rates:
    # An override without cache prices bills cache tokens as input, like genai-prices
    # does for a model that has no cache price.
    return Rates(
        input=Rate(p.input),
        output=Rate(p.output),
        cache_read=Rate(p.input if p.cache_read is None else p.cache_read),
        cache_write=Rate(p.input if p.cache_write is None else p.cache_write),
    )


def _library_rates(provider: str, model: str) -> Rates | None:
    """Resolve `model` in genai-prices (for `provider` when it knows it, else by model name)."""
    from genai_prices import Usage, calc_price

    now = time.time()
    calc: Any = None
    for provider_id in (provider, None):
        try:
            calc = calc_price(Usage(input_tokens=0), model, provider_id=provider_id)
            break
        except LookupError:
            continue
        except Exception:  # a bad data file must not break a request; it is just unpriced
            log.exception("genai-prices failed for model %r", model)
            return None
    if calc is None:
        return None
    prices = calc.model_price
    if getattr(prices, "input_mtok", None) is None:
        return None
    rate_in = _rate(prices.input_mtok)
    return Rates(
        input=rate_in,
        output=_rate(prices.output_mtok) if prices.output_mtok is not None else Rate(0.0),
        cache_read=rate_in if prices.cache_read_mtok is None else _rate(prices.cache_read_mtok),
        cache_write=rate_in if prices.cache_write_mtok is None else _rate(prices.cache_write_mtok),
        expires=_expiry(calc.model, now),
    )


def _rate(price: Any) -> Rate:
    """A Rate from a genai-prices Decimal or TieredPrices."""
    tiers = getattr(price, "tiers", None)
    if tiers is None:
        return Rate(float(price))
    return Rate(float(price.base), tuple((int(t.start), float(t.price)) for t in tiers))


def _expiry(model_info: Any, now: float) -> float:
    """When the resolved price may change: prices can start on a date or apply by time of day."""
    from genai_prices.types import StartDateConstraint, TimeOfDateConstraint

    conditional = model_info.prices if isinstance(model_info.prices, list) else []
    constraints = [c.constraint for c in conditional]
    if any(isinstance(c, TimeOfDateConstraint) for c in constraints):
        return now + _TIME_OF_DAY_TTL
    if any(isinstance(c, StartDateConstraint) for c in constraints):
        return (now // _DAY + 1) * _DAY  # start dates are UTC days
    return float("inf")
