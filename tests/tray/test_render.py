"""The icon and its title, rendered from states: colours, glyphs, fit and length."""

from __future__ import annotations

import pytest
from PIL import Image

from tray.render import (
    BAR_HEIGHT,
    COLOURS,
    MARGIN,
    SIZE,
    TITLE_MAX,
    fit_font,
    money,
    render_icon,
    spend_label,
    tooltip,
)
from tray.state import Budget, Cache, Level, Route, TrayState, down

OK = TrayState(running=True, address="http://127.0.0.1:8787", today_usd=3.2, month_usd=45.1)
WARN = TrayState(running=True, today_usd=21.0, budgets=(Budget("day", 25.0, 21.0, (0.8, 0.95)),))
OVER = TrayState(running=True, today_usd=31.0, budgets=(Budget("day", 25.0, 31.0),))
PAUSED = TrayState(running=True, today_usd=3.2, routes=(Route("a", False), Route("b", False)))
DOWN = down("not running")
STATES = {Level.OK: OK, Level.WARN: WARN, Level.OVER: OVER, Level.PAUSED: PAUSED, Level.DOWN: DOWN}
BACKGROUND = (2, SIZE // 2)  # inside the tile, left of any glyph
BAR_TOP = SIZE - MARGIN - BAR_HEIGHT


def white(px: tuple[int, ...]) -> bool:
    return px[3] == 255 and min(px[:3]) >= 230


def white_box(img: Image.Image, rows: range | None = None) -> tuple[int, int, int, int] | None:
    """The bounding box (left, top, right, bottom inclusive) of the white pixels in `rows`."""
    xs, ys = [], []
    for y in rows or range(img.height):
        for x in range(img.width):
            if white(img.getpixel((x, y))):  # type: ignore[arg-type]
                xs.append(x)
                ys.append(y)
    return (min(xs), min(ys), max(xs), max(ys)) if xs else None


@pytest.mark.parametrize("level", list(Level))
def test_the_tile_colour_says_the_level(level: Level) -> None:
    state = STATES[level]
    assert state.level is level

    img = render_icon(state)

    assert img.mode == "RGBA" and img.size == (SIZE, SIZE)
    assert img.getpixel(BACKGROUND) == COLOURS[level]
    assert img.getpixel((0, 0))[3] == 0  # type: ignore[index]  # rounded, transparent corners
    assert white_box(img) is not None  # a glyph: the spend, a cross or a pause sign


def test_the_five_looks_are_distinct() -> None:
    backgrounds = {render_icon(s).getpixel(BACKGROUND) for s in STATES.values()}
    pictures = {render_icon(s).tobytes() for s in STATES.values()}

    assert len(backgrounds) == 5
    assert len(pictures) == 5


def test_down_and_paused_show_their_sign_not_the_spend() -> None:
    rich_but_down = TrayState(running=False, today_usd=123.0)
    paused_rich = TrayState(running=True, today_usd=123.0, routes=(Route("a", False),))

    assert render_icon(rich_but_down).tobytes() == render_icon(DOWN).tobytes()
    assert render_icon(paused_rich).tobytes() == render_icon(PAUSED).tobytes()
    # The cross touches the tile's diagonal, the pause sign keeps its centre clear.
    centre = (SIZE // 2, SIZE // 2)
    assert white(render_icon(DOWN).getpixel(centre))  # type: ignore[arg-type]
    assert not white(render_icon(PAUSED).getpixel(centre))  # type: ignore[arg-type]


def test_the_spend_changes_the_picture() -> None:
    a = render_icon(TrayState(running=True, today_usd=3.2))
    b = render_icon(TrayState(running=True, today_usd=4.2))

    assert a.getpixel(BACKGROUND) == b.getpixel(BACKGROUND)
    assert a.tobytes() != b.tobytes()


@pytest.mark.parametrize(
    "usd", [0.0, 0.42, 3.2, 9.96, 12.0, 999.0, 1234.0, 56_789.0, 9_999_999.0, 5e9]
)
def test_the_text_fits_inside_the_margins(usd: float) -> None:
    img = render_icon(TrayState(running=True, today_usd=usd))

    box = white_box(img)
    assert box is not None
    left, top, right, bottom = box
    assert left >= MARGIN - 1 and right <= SIZE - MARGIN
    assert top >= MARGIN - 1 and bottom <= SIZE - MARGIN
    font = fit_font(spend_label(usd), SIZE - 2 * MARGIN, SIZE - 2 * MARGIN)
    assert font.size >= 16  # still legible when the panel scales the icon down


@pytest.mark.parametrize("usd", [0.42, 12.0, 1234.0])
def test_the_text_stays_above_the_budget_bar(usd: float) -> None:
    img = render_icon(TrayState(running=True, today_usd=usd, budgets=(Budget("day", 1e6, 0.0),)))

    box = white_box(img, range(0, BAR_TOP))
    assert box is not None and box[3] < BAR_TOP - 1
    assert white_box(img, range(BAR_TOP, SIZE)) is None  # an empty bar has no white in it


def test_the_budget_bar_fills_with_the_spend() -> None:
    def filled(fraction: float) -> int:
        img = render_icon(
            TrayState(running=True, budgets=(Budget("day", 100.0, 100.0 * fraction),))
        )
        row = BAR_TOP + BAR_HEIGHT // 2
        return sum(white(img.getpixel((x, row))) for x in range(SIZE))  # type: ignore[arg-type]

    quarter, half, full, beyond = filled(0.25), filled(0.5), filled(1.0), filled(3.0)

    assert 0 < quarter < half < full
    assert full == beyond
    assert abs(half / full - 0.5) < 0.1


def test_a_smaller_icon_keeps_the_look() -> None:
    img = render_icon(OVER, size=22)

    assert img.size == (22, 22)
    r, g, b, a = img.getpixel((1, 11))  # type: ignore[misc]
    assert a == 255 and r > 150 and g < 80 and b < 80


@pytest.mark.parametrize(
    ("usd", "label"),
    [
        (0.0, "$0"),
        (0.004, "$0"),
        (0.005, "$.01"),
        (0.42, "$.42"),
        (0.994, "$.99"),
        (0.996, "$1.0"),
        (3.2, "$3.2"),
        (9.96, "$10"),
        (12.4, "$12"),
        (999.4, "$999"),
        (999.6, "$1.0k"),
        (1234.0, "$1.2k"),
        (56_789.0, "$57k"),
        (1_234_567.0, "$1.2M"),
        (5e9, "$1B+"),
    ],
)
def test_spend_label(usd: float, label: str) -> None:
    assert spend_label(usd) == label
    assert len(label) <= 5 and label.isascii()


def test_money() -> None:
    assert money(0) == "$0.00"
    assert money(0.001) == "<$0.01"
    assert money(3.2) == "$3.20"
    assert money(1234.5) == "$1,234.50"


def test_tooltip_says_spend_routes_and_budget() -> None:
    state = TrayState(
        running=True,
        today_usd=3.2,
        month_usd=45.1,
        routes=(Route("a", True), Route("b", False), Route("c", True)),
        budgets=(Budget("day", 25.0, 3.2), Budget("month", 400.0, 45.1)),
        cache=Cache("exact", 0.5),
    )

    assert (
        tooltip(state)
        == "claude-sidecar: $3.20 today · $45.10 this month · 2/3 routes on · day budget 13%"
    )
    assert tooltip(OVER).endswith("day budget 124% (over)")
    assert (
        tooltip(PAUSED)
        == "claude-sidecar: paused, every route is off · $3.20 today · $0.00 this month"
    )
    assert tooltip(DOWN) == "claude-sidecar: not running"
    assert tooltip(OK) == "claude-sidecar: $3.20 today · $45.10 this month"


def test_tooltip_stays_under_128_characters() -> None:
    long_problem = down("not answering at http://127.0.0.1:8787 " + "because " * 30)
    many = TrayState(
        running=True,
        today_usd=123_456_789.0,
        month_usd=987_654_321.0,
        routes=tuple(Route(f"route-{i}-" + "x" * 40, i % 2 == 0) for i in range(500)),
        budgets=(Budget("a-very-long-budget-period-name" * 3, 1.0, 1e9),),
    )

    for state in (long_problem, many):
        text = tooltip(state)
        assert len(text) <= TITLE_MAX < 128
        assert text.startswith("claude-sidecar: ")
    assert tooltip(long_problem).endswith("...")
