"""The README's picture of the icon states: drawn by render_icon, and the committed copy is
current (same layout, same colour per state; glyph edges may differ between FreeType
versions, so they are not compared)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.tray.x11 import ROOT
from tray.gallery import COLUMN, PANEL, STATES, gallery, main
from tray.render import COLOURS, SIZE
from tray.state import Level

COMMITTED = ROOT / "docs" / "tray-icons.png"


def tile_colours(img: Image.Image) -> list[tuple[int, ...]]:
    """The colour of each column's big and small icon, sampled left of any glyph."""
    out = []
    for i in range(len(STATES)):
        left = i * COLUMN + (COLUMN - SIZE - PANEL - 12) // 2
        out.append(img.getpixel((left + 2, 12 + SIZE // 2)))  # type: ignore[arg-type]
        out.append(img.getpixel((left + SIZE + 12 + 1, 12 + SIZE - PANEL // 2)))  # type: ignore[arg-type]
    return out


def near(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Equal but for resampling: the 24 px icon is the big one scaled down."""
    return all(abs(x - y) <= 8 for x, y in zip(a, b, strict=True))


def test_one_column_per_state_in_its_colour() -> None:
    colours = tile_colours(gallery())

    assert [state.level for _, _, state in STATES] == [
        Level.OK,
        Level.WARN,
        Level.OVER,
        Level.PAUSED,
        Level.DOWN,
    ]
    for (_, _, state), big, small in zip(STATES, colours[::2], colours[1::2], strict=True):
        assert big == COLOURS[state.level]
        assert near(small, COLOURS[state.level])


def test_the_committed_picture_is_current() -> None:
    with Image.open(COMMITTED) as committed:
        assert committed.size == gallery().size
        assert tile_colours(committed.convert("RGBA")) == tile_colours(gallery())


def test_main_writes_the_png(tmp_path: Path) -> None:
    target = tmp_path / "icons.png"

    main([str(target)])

    with Image.open(target) as written:
        assert written.size == gallery().size
    with pytest.raises(SystemExit, match=r"^usage: python -m tray\.gallery FILE\.png$"):
        main([])
