"""How figures read on screen."""

from __future__ import annotations

from tui import format as fmt
from tui.widgets.requests import short_model


def test_money_tokens_durations() -> None:
    assert [fmt.money(v) for v in (None, 0.0, 0.000049, 0.01234, 1.5, 1234.567)] == ["—", "$0.0000", "<$0.0001", "$0.0123", "$1.50", "$1,234.57"]
    assert [fmt.tokens(v) for v in (None, 812, 12_400, 3_100_000)] == ["—", "812", "12.4k", "3.1M"]
    assert [fmt.millis(v) for v in (None, 812.4, 4200)] == ["—", "812 ms", "4.2 s"]
    assert [fmt.duration(v) for v in (-5, 45, 720, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)] == ["0s", "45s", "12m", "3h 05m", "2d 04h"]


def test_bar_fills_ticks_and_colours() -> None:
    assert fmt.bar(0.5, 10, (0.8,)) == "[$success]█████···│·[/]"
    assert fmt.bar(0.85, 10, (0.8, 0.95)) == "[$warning]████████▌│[/]"
    assert fmt.bar(1.7, 10) == "[$error]██████████[/]"


def test_sparkbars() -> None:
    rows = fmt.sparkbars([0.0, 1.0, 2.0], 2)
    assert rows == ["  █", "▁██"]
    assert fmt.sparkbars([0.0, 0.0], 3) == ["  ", "  ", "▁▁"]


def test_short_model_names() -> None:
    assert short_model("claude-haiku-4-5-20251001") == "haiku-4-5"
    assert short_model("claude-opus-4-8") == "opus-4-8"
    assert short_model("gpt-5-mini") == "gpt-5-mini"


def test_plain_shows_wire_text_verbatim() -> None:
    from textual.content import Content

    for text in ("[[routes]]", "[budget] daily_usd", "[$error]boom[/]", "a\\[b]", "x]"):
        assert Content.from_markup(f"[b]{fmt.plain(text)}[/b]").plain == text
