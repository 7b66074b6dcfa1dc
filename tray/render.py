"""Pure rendering of the tray icon and its title from a `TrayState`.

The icon is a 64 px rounded tile whose colour says how full the budgets are (green, amber,
red), with today's spend in as few glyphs as possible ("$3.2", "$.42", "$12k") and, when a
budget is configured, a bar along the bottom showing how much of the fullest one is
spent. A sidecar that is down shows a grey tile with a cross, one whose routes are all
switched off a slate tile with a pause sign. Only Pillow's bundled font is used, so the
icon looks the same on every machine.
"""

from __future__ import annotations

import functools

from PIL import Image, ImageDraw, ImageFont

from tray.state import Level, TrayState

SIZE = 64
TITLE_MAX = 127  # Windows refuses tooltips of 128 characters or more (szTip, with its NUL)
MARGIN = 5
RADIUS = 12
BAR_HEIGHT = 6
TEXT = (255, 255, 255, 255)
COLOURS: dict[Level, tuple[int, int, int, int]] = {
    Level.OK: (46, 125, 50, 255),
    Level.WARN: (239, 108, 0, 255),
    Level.OVER: (198, 40, 40, 255),
    Level.PAUSED: (55, 90, 127, 255),
    Level.DOWN: (110, 110, 110, 255),
}
BAR_TRACK = (0, 0, 0, 110)
LARGEST_FONT, SMALLEST_FONT = 40, 12


def render_icon(state: TrayState, size: int = SIZE) -> Image.Image:
    """The icon for `state`: an RGBA image of `size` x `size` pixels."""
    img = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    level = state.level
    draw.rounded_rectangle((0, 0, SIZE - 1, SIZE - 1), RADIUS, fill=COLOURS[level])
    if level is Level.DOWN:
        _cross(draw)
    elif level is Level.PAUSED:
        _pause(draw)
    else:
        text_bottom = SIZE - MARGIN
        worst = state.fullest
        if worst is not None:
            text_bottom = _budget_bar(draw, worst.fraction)
        _centred_text(
            draw, spend_label(state.today_usd), (MARGIN, MARGIN, SIZE - MARGIN, text_bottom)
        )
    return img if size == SIZE else img.resize((size, size), Image.Resampling.LANCZOS)


def spend_label(usd: float) -> str:
    """Today's spend in at most five ASCII glyphs: $0, $.42, $3.2, $12, $999, $1.2k, $12k, $1.2M."""
    if usd < 0.005:
        return "$0"
    if round(usd, 2) < 1:
        return "$" + f"{usd:.2f}".removeprefix("0")
    if round(usd, 1) < 10:
        return f"${usd:.1f}"
    if round(usd) < 1000:
        return f"${usd:.0f}"
    for unit, scale in (("k", 1e3), ("M", 1e6)):
        if round(usd / scale, 1) < 10:
            return f"${usd / scale:.1f}{unit}"
        if round(usd / scale) < 1000:
            return f"${usd / scale:.0f}{unit}"
    return "$1B+"


def money(usd: float) -> str:
    """Dollars for the title and the menu: $3.20, <$0.01, $1,234.50."""
    if 0 < usd < 0.005:
        return "<$0.01"
    return f"${usd:,.2f}"


def tooltip(state: TrayState) -> str:
    """The icon's title (hover text): today's and this month's spend, routes and budget."""
    if not state.running:
        return _clip(f"claude-sidecar: {state.problem or 'not running'}")
    parts = [f"{money(state.today_usd)} today", f"{money(state.month_usd)} this month"]
    if state.paused:
        parts.insert(0, "paused, every route is off")
    elif state.routes:
        parts.append(f"{sum(r.enabled for r in state.routes)}/{len(state.routes)} routes on")
    worst = state.fullest
    if worst is not None:
        over = " (over)" if worst.fraction >= 1 else ""
        parts.append(f"{worst.period} budget {worst.fraction:.0%}{over}")
    return _clip("claude-sidecar: " + " · ".join(parts))


def _clip(text: str) -> str:
    return text if len(text) <= TITLE_MAX else text[: TITLE_MAX - 3].rstrip() + "..."


def _cross(draw: ImageDraw.ImageDraw) -> None:
    a, b = 19, SIZE - 1 - 19
    draw.line((a, a, b, b), fill=TEXT, width=7)
    draw.line((a, b, b, a), fill=TEXT, width=7)


def _pause(draw: ImageDraw.ImageDraw) -> None:
    top, bottom, width, gap = 18, SIZE - 1 - 18, 8, 8
    left = (SIZE - 2 * width - gap) // 2
    draw.rectangle((left, top, left + width - 1, bottom), fill=TEXT)
    draw.rectangle((left + width + gap, top, left + 2 * width + gap - 1, bottom), fill=TEXT)


def _budget_bar(draw: ImageDraw.ImageDraw, fraction: float) -> int:
    """Draw the budget bar along the bottom; return the y where the text area ends."""
    top = SIZE - MARGIN - BAR_HEIGHT
    left, right = MARGIN + 2, SIZE - MARGIN - 3
    draw.rounded_rectangle((left, top, right, top + BAR_HEIGHT - 1), 3, fill=BAR_TRACK)
    filled = left + round((right - left) * min(max(fraction, 0.0), 1.0))
    if filled > left:
        draw.rounded_rectangle((left, top, filled, top + BAR_HEIGHT - 1), 3, fill=TEXT)
    return top - 2


def _centred_text(draw: ImageDraw.ImageDraw, text: str, box: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    font = fit_font(text, right - left, bottom - top)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font, stroke_width=1)
    x = left + (right - left - (x1 - x0)) / 2 - x0
    y = top + (bottom - top - (y1 - y0)) / 2 - y0
    draw.text((x, y), text, font=font, fill=TEXT, stroke_width=1, stroke_fill=TEXT)


def fit_font(text: str, width: int, height: int) -> ImageFont.FreeTypeFont:
    """The largest bundled font size at which `text` (drawn bold) fits in width x height."""
    for size in range(LARGEST_FONT, SMALLEST_FONT - 1, -1):
        font = _font(size)
        x0, y0, x1, y1 = font.getbbox(text, stroke_width=1)
        if x1 - x0 <= width and y1 - y0 <= height:
            return font
    return _font(SMALLEST_FONT)


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow built without FreeType
        raise RuntimeError("Pillow has no FreeType support; the tray needs it to draw text")
    return font
