"""How figures read on screen: dollars, tokens, durations, bars and little charts.

Pure functions of their inputs, so widgets stay thin and the formatting is tested directly.
Colours are Textual theme variables (`$success`, `$warning`, `$error`) in content markup,
so every built-in theme applies.
"""

from __future__ import annotations

from collections.abc import Sequence

BLOCKS = " ▁▂▃▄▅▆▇█"


def money(usd: float | None) -> str:
    """Dollars: four decimals under a dollar (requests cost cents), two above."""
    if usd is None:
        return "—"
    if 0 < usd < 0.00005:
        return "<$0.0001"  # not "$0.0000": it did cost something
    if abs(usd) < 1:
        return f"${usd:.4f}"
    return f"${usd:,.2f}"


def tokens(n: int | None) -> str:
    """A token count: 812, 12.4k, 3.1M."""
    if n is None:
        return "—"
    if abs(n) < 1000:
        return str(n)
    if abs(n) < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def millis(ms: float | None) -> str:
    """A latency: 812 ms, 4.2 s."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s"


def duration(seconds: float) -> str:
    """A countdown or an age: 45s, 12m, 3h 05m, 2d 04h."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def percent(fraction: float | None) -> str:
    """A fraction as a whole percentage."""
    return "—" if fraction is None else f"{fraction * 100:.0f}%"


def level(fraction: float, thresholds: Sequence[float] = (0.8, 0.95)) -> str:
    """The theme colour for a fill level: success, then warning, then error past the last mark."""
    marks = sorted(thresholds) or [0.8, 0.95]
    if fraction >= marks[-1] or fraction >= 1:
        return "$error"
    if fraction >= marks[0]:
        return "$warning"
    return "$success"


def bar(fraction: float, width: int, thresholds: Sequence[float] = (0.8, 0.95)) -> str:
    """A horizontal gauge in content markup, with `│` ticks where the thresholds fall."""
    width = max(width, 4)
    filled = min(max(fraction, 0.0), 1.0) * width
    full = int(filled)
    ticks = {min(int(t * width), width - 1) for t in thresholds if 0 < t < 1}
    cells = []
    for i in range(width):
        if i < full:
            cells.append("█")
        elif i == full and filled - full >= 0.5:
            cells.append("▌")
        else:
            cells.append("│" if i in ticks else "·")
    colour = level(fraction, thresholds)
    return f"[{colour}]{''.join(cells)}[/]"


def sparkbars(values: Sequence[float], height: int) -> list[str]:
    """A column chart `height` rows tall, one column per value, top row first."""
    top = max(values, default=0.0)
    if top <= 0:
        return [" " * len(values) for _ in range(height - 1)] + ["▁" * len(values)]
    levels = [round(v / top * height * 8) for v in values]
    rows = []
    for row in range(height - 1, -1, -1):
        line = []
        for lv in levels:
            eighths = min(max(lv - row * 8, 0), 8)
            line.append(BLOCKS[eighths] if eighths or row else "▁")
        rows.append("".join(line))
    return rows


def short_id(value: str | None, keep: int = 8) -> str:
    """The tail of a long id (session ids are UUIDs): enough to tell rows apart."""
    if not value:
        return "—"
    return value if len(value) <= keep else "…" + value[-keep:]


def plain(text: str) -> str:
    """Escape text from the wire so content markup shows it verbatim.

    Every `[` is escaped: textual.markup.escape leaves the first of `[[` alone.
    """
    return text.replace("[", "\\[")
