"""Pricing: known Anthropic prices, cache tokens, dated ids, overrides, unknown models."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from sidecar.ledger.config import PriceOverride
from sidecar.ledger.pricing import Pricing

M = 1_000_000


@pytest.fixture(scope="module")
def pricing() -> Pricing:
    return Pricing()


@pytest.mark.parametrize(
    ("model", "inp", "out", "read", "write"),
    [
        ("claude-opus-4-8", 5.0, 25.0, 0.5, 6.25),
        ("claude-sonnet-4-5", 3.0, 15.0, 0.3, 3.75),
        ("claude-haiku-4-5", 1.0, 5.0, 0.1, 1.25),
    ],
)
def test_anthropic_prices_per_token_kind(
    pricing: Pricing, model: str, inp: float, out: float, read: float, write: float
) -> None:
    n = 100_000  # under the 200k long-context tier
    assert pricing.cost("anthropic", model, n, 0, 0, 0) == pytest.approx((inp * n / M, True))
    assert pricing.cost("anthropic", model, 0, n, 0, 0) == pytest.approx((out * n / M, True))
    assert pricing.cost("anthropic", model, 0, 0, n, 0) == pytest.approx((read * n / M, True))
    assert pricing.cost("anthropic", model, 0, 0, 0, n) == pytest.approx((write * n / M, True))


def test_a_typical_claude_code_turn(pricing: Pricing) -> None:
    # Anthropic's input_tokens excludes cache reads and writes; each kind has its own price.
    usd, priced = pricing.cost("anthropic", "claude-opus-4-8", 1_200, 850, 48_000, 3_000)
    assert priced
    assert usd == pytest.approx((1_200 * 5 + 850 * 25 + 48_000 * 0.5 + 3_000 * 6.25) / M)


def test_without_cache_tokens(pricing: Pricing) -> None:
    usd, _ = pricing.cost("anthropic", "claude-haiku-4-5", 2_000, 100)
    assert usd == pytest.approx((2_000 * 1 + 100 * 5) / M)


@pytest.mark.parametrize(
    ("model", "same_as"),
    [
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-8[1m]", "claude-opus-4-8"),
        ("claude-sonnet-4-5[1m]", "claude-sonnet-4-5"),
    ],
)
def test_dated_and_suffixed_ids_price_like_the_base_model(
    pricing: Pricing, model: str, same_as: str
) -> None:
    assert pricing.cost("anthropic", model, 1_000, 1_000, 1_000, 1_000) == pricing.cost(
        "anthropic", same_as, 1_000, 1_000, 1_000, 1_000
    )
    assert pricing.cost("anthropic", model, 1, 0)[1]


@pytest.mark.parametrize(
    ("model", "tokens"),
    [
        ("claude-opus-4-8", (1_200, 850, 48_000, 3_000)),
        ("claude-sonnet-4-5", (1_200, 850, 48_000, 3_000)),
        (
            "claude-sonnet-4-5",
            (50_000, 4_000, 150_000, 10_000),
        ),  # > 200k total input: long-context tier
        ("claude-sonnet-4-5", (250_000, 1_000, 0, 0)),
        ("claude-haiku-4-5-20251001", (10, 20, 30, 40)),
        ("claude-sonnet-4-0", (300_000, 1_000, 0, 0)),
    ],
)
def test_matches_genai_prices_for_the_total(
    pricing: Pricing, model: str, tokens: tuple[int, int, int, int]
) -> None:
    inp, out, read, write = tokens
    expected = calc_price(
        Usage(
            input_tokens=inp + read + write,
            output_tokens=out,
            cache_read_tokens=read,
            cache_write_tokens=write,
        ),
        model,
        provider_id="anthropic",
    ).total_price
    assert pricing.cost("anthropic", model, inp, out, read, write)[0] == pytest.approx(
        float(expected)
    )


def test_long_context_tier_reprices_every_token(pricing: Pricing) -> None:
    below, _ = pricing.cost("anthropic", "claude-sonnet-4-5", 200_000, 1_000)
    above, _ = pricing.cost("anthropic", "claude-sonnet-4-5", 200_001, 1_000)
    assert below == pytest.approx((200_000 * 3 + 1_000 * 15) / M)
    assert above == pytest.approx((200_001 * 6 + 1_000 * 22.5) / M)


def test_overrides_win_exact_then_longest_glob() -> None:
    p = Pricing(
        {
            "claude-opus-4-8": PriceOverride(input=1, output=2, cache_read=0.25, cache_write=0.5),
            "claude-*": PriceOverride(input=10, output=20),
            "claude-sonnet-*": PriceOverride(input=7, output=8, cache_read=0.7, cache_write=9),
            "my-local-model": PriceOverride(input=0.5, output=0.5),
        }
    )
    assert p.cost("anthropic", "claude-opus-4-8", M, M, M, M) == pytest.approx(
        (1 + 2 + 0.25 + 0.5, True)
    )
    assert p.cost("anthropic", "claude-opus-4-8[1m]", M, 0) == pytest.approx((1.0, True))
    assert p.cost("anthropic", "claude-sonnet-4-5", M, M, M, M) == pytest.approx(
        (7 + 8 + 0.7 + 9, True)
    )
    assert p.cost("anthropic", "my-local-model", M, M) == pytest.approx((1.0, True))
    # No cache prices in the override: cache tokens are billed as input, as genai-prices does.
    assert p.cost("anthropic", "claude-haiku-4-5", 0, 0, M, M) == pytest.approx((20.0, True))


def test_unknown_model_costs_nothing_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    p = Pricing()
    with caplog.at_level(logging.WARNING, logger="sidecar.ledger.pricing"):
        for _ in range(3):
            assert p.cost("anthropic", "claude-nonexistent-9", 1_000, 1_000) == (0.0, False)
    warnings = [r for r in caplog.records if "claude-nonexistent-9" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


def test_no_model_costs_nothing(pricing: Pricing) -> None:
    assert pricing.cost("anthropic", None, 10, 10) == (0.0, False)
    assert pricing.cost("anthropic", "", 10, 10) == (0.0, False)


def test_a_custom_provider_name_still_finds_anthropic_prices(pricing: Pricing) -> None:
    assert pricing.cost("work", "claude-opus-4-8", M, 0) == pytest.approx((5.0, True))


def test_pricing_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pricing tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    p = Pricing()
    p.warm([("anthropic", "claude-sonnet-4-5")])
    assert p.cost("anthropic", "claude-opus-4-8", M, 0) == pytest.approx((5.0, True))


def test_a_price_with_a_start_date_is_resolved_again_the_next_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sidecar.ledger import pricing as mod

    p = Pricing()
    # claude-sonnet-4-6 has a dated price change in the data, so its rates expire at UTC midnight.
    p.cost("anthropic", "claude-sonnet-4-6", 1, 1)
    rates = p._cache[("anthropic", "claude-sonnet-4-6")]
    assert rates is not None and rates.expires < float("inf")
    resolved: list[str] = []
    real = mod._library_rates

    def spy(provider: str, model: str) -> Any:
        resolved.append(model)
        return real(provider, model)

    monkeypatch.setattr(mod, "_library_rates", spy)
    p.cost("anthropic", "claude-sonnet-4-6", 1, 1)
    assert resolved == []
    monkeypatch.setattr("time.time", lambda: rates.expires + 1)
    assert p.cost("anthropic", "claude-sonnet-4-6", 1, 1)[1]
    assert resolved == ["claude-sonnet-4-6"]
