"""A picture of every icon state, for the README: `python -m tray.gallery docs/tray-icons.png`.

Each state is drawn at the icon's full size and at 24 px (a panel's usual size), with a
caption, by the same `render_icon` the tray uses.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from PIL import Image, ImageDraw

from tray.render import SIZE, fit_font, render_icon
from tray.state import Budget, Route, TrayState, down

PANEL = 24
COLUMN = 156
HEIGHT = 128
BACKGROUND = (250, 250, 250, 255)
INK = (40, 40, 40, 255)

STATES: tuple[tuple[str, str, TrayState], ...] = (
    ("ok", "$3.20 today", TrayState(running=True, today_usd=3.2)),
    (
        "warn",
        "84% of the day budget",
        TrayState(running=True, today_usd=21.0, budgets=(Budget("day", 25.0, 21.0, (0.8, 0.95)),)),
    ),
    (
        "over budget",
        "124% of the day budget",
        TrayState(running=True, today_usd=31.0, budgets=(Budget("day", 25.0, 31.0),)),
    ),
    (
        "paused",
        "every route is off",
        TrayState(running=True, today_usd=3.2, routes=(Route("default", False),)),
    ),
    ("down", "sidecar not running", down("not running")),
)


def gallery(states: Sequence[tuple[str, str, TrayState]] = STATES) -> Image.Image:
    """One row of captioned icons, one column per state."""
    img = Image.new("RGBA", (COLUMN * len(states), HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(img)
    name_font, note_font = fit_font("Mg", 200, 15), fit_font("Mg", 200, 12)
    for i, (name, note, state) in enumerate(states):
        left = i * COLUMN + (COLUMN - SIZE - PANEL - 12) // 2
        img.alpha_composite(render_icon(state), (left, 12))
        img.alpha_composite(render_icon(state, PANEL), (left + SIZE + 12, 12 + SIZE - PANEL))
        centre = i * COLUMN + COLUMN // 2
        draw.text((centre, SIZE + 26), name, font=name_font, fill=INK, anchor="mm")
        draw.text((centre, SIZE + 46), note, font=note_font, fill=INK, anchor="mm")
    return img


def main(argv: Sequence[str] | None = None) -> None:
    """Write the gallery to the PNG file named on the command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].endswith(".png"):
        sys.exit("usage: python -m tray.gallery FILE.png")
    gallery().save(args[0])


if __name__ == "__main__":
    main()
