"""A table for many short rows that arrive and change all the time (the live request log).

Textual's DataTable re-renders every visible cell after any change to any row, which at
tens of events a second costs more than the rest of the dashboard together. This table
renders each row once into a Strip and caches it until that row, the column widths, the
cursor or the theme change; a repaint after a new row is then a few dictionary lookups.

Rows have a key and one Text per column; the header stays put while rows scroll. Keys:
up/down/page up/page down/home/end move the row cursor, enter (or a double click) selects.
With `follow` on, the cursor rides on the newest row, like `tail -f`; moving it up turns
following off, going back to the last row turns it on again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Justify = Literal["left", "right"]
GAP = 2  # spaces between columns


class LiveTable(ScrollView, can_focus=True):
    """Keyed rows of Text cells under a fixed header, rendered row by row from a cache."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "move_to(0)", "First", show=False),
        Binding("end", "move_to(-1)", "Last", show=False),
        Binding("enter", "select", "Details"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"livetable--header", "livetable--cursor", "livetable--even"}
    DEFAULT_CSS = """
    LiveTable {
        background: $surface;
        color: $foreground;
        & > .livetable--header { text-style: bold; background: $panel; color: $foreground; }
        & > .livetable--even { background: $surface-lighten-1 50%; }
        & > .livetable--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        &:focus > .livetable--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """

    class Selected(Message):
        """The user chose a row (enter, or a double click)."""

        def __init__(self, table: LiveTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> LiveTable:
            """The table the row belongs to."""
            return self.table

    def __init__(self, columns: Sequence[tuple[str, str, Justify]], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = list(columns)
        self.widths = [cell_len(label) for _, label, _ in columns]
        self.follow = True
        self._rows: dict[str, list[Text]] = {}
        self._order: list[str] = []
        self._revision: dict[str, int] = {}
        self._cursor = 0
        self._layout = 0  # bumps when column widths grow (every cached strip is stale)
        self._strips: LRUCache[tuple[object, ...], tuple[Strip, Style]] = LRUCache(1024)

    # ---------------------------------------------------------------- data

    @property
    def row_count(self) -> int:
        """How many rows the table holds."""
        return len(self._order)

    def row_keys(self) -> list[str]:
        """The rows' keys, top to bottom."""
        return list(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def get_row(self, key: str) -> list[Text]:
        """The cells of row `key`."""
        return self._rows[key]

    def get_cell(self, key: str, column: str) -> Text:
        """One cell, by row key and column key."""
        index = next(i for i, (k, _, _) in enumerate(self.columns) if k == column)
        return self._rows[key][index]

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor."""
        return self._order[self._cursor] if self._order else None

    def set_row(self, key: str, cells: Sequence[Text]) -> None:
        """Add row `key` at the bottom, or replace its cells where it is."""
        if len(cells) != len(self.columns):
            raise ValueError(f"row {key!r} has {len(cells)} cells for {len(self.columns)} columns")
        if key not in self._rows:
            self._order.append(key)
        self._rows[key] = list(cells)
        self._revision[key] = self._revision.get(key, 0) + 1
        for i, cell in enumerate(cells):
            if cell.cell_len > self.widths[i]:
                self.widths[i] = cell.cell_len
                self._layout += 1

    def remove_row(self, key: str) -> None:
        """Drop row `key` (the cursor stays on the row it was on, where it still exists)."""
        if key not in self._rows:
            return
        index = self._order.index(key)
        del self._order[index], self._rows[key], self._revision[key]
        if index < self._cursor or self._cursor >= len(self._order):
            self._cursor = max(self._cursor - 1, 0)

    def clear(self) -> None:
        """Drop every row."""
        self._rows.clear()
        self._order.clear()
        self._revision.clear()
        self._strips.clear()
        self._cursor = 0

    def changed(self) -> None:
        """Call after a batch of set_row/remove_row: resize, follow the newest row, repaint."""
        width = sum(self.widths) + GAP * (len(self.widths) - 1) + 1
        self.virtual_size = Size(width, len(self._order) + 1)
        if self.follow and self._order:
            self._cursor = len(self._order) - 1
        self._cursor = min(self._cursor, max(len(self._order) - 1, 0))
        self._keep_cursor_visible()
        self.refresh()

    def restyle(self) -> None:
        """Forget every rendered row (the theme changed)."""
        self._strips.clear()
        self.refresh()

    # ---------------------------------------------------------------- cursor

    def _move_to(self, index: int) -> None:
        if not self._order:
            return
        self._cursor = max(0, min(index, len(self._order) - 1))
        self.follow = self._cursor == len(self._order) - 1
        self._keep_cursor_visible()
        self.refresh()

    def _keep_cursor_visible(self) -> None:
        rows_shown = max(self.scrollable_content_region.height - 1, 1)
        top = int(self.scroll_offset.y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, immediate=True)
        elif self._cursor >= top + rows_shown:
            self.scroll_to(y=self._cursor - rows_shown + 1, animate=False, immediate=True)

    def action_move(self, step: int) -> None:
        """Move the cursor `step` rows."""
        self._move_to(self._cursor + step)

    def action_page(self, direction: int) -> None:
        """Move the cursor a screenful."""
        self._move_to(self._cursor + direction * max(self.scrollable_content_region.height - 2, 1))

    def action_move_to(self, index: int) -> None:
        """Move the cursor to row `index` (-1: the last)."""
        self._move_to(index if index >= 0 else len(self._order) - 1)

    def action_select(self) -> None:
        """Tell the app which row was chosen."""
        if self.cursor_key is not None:
            self.post_message(self.Selected(self, self.cursor_key))

    def on_click(self, event: events.Click) -> None:
        """A click moves the cursor to the row; a double click also selects it."""
        index = int(self.scroll_offset.y) + event.y - 1
        if event.y >= 1 and 0 <= index < len(self._order):
            self._move_to(index)
            if event.chain >= 2:
                self.action_select()

    # ---------------------------------------------------------------- rendering

    def render_line(self, y: int) -> Strip:
        """Line 0 is the header; the rest are rows from the scroll offset down."""
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        if y == 0:
            strip, style = self._strip(("header", self._layout), [Text(label) for _, label, _ in self.columns], "livetable--header")
        else:
            index = scroll_y + y - 1
            if index >= len(self._order):
                return Strip.blank(width, self.rich_style)
            key = self._order[index]
            component = "livetable--cursor" if index == self._cursor else "livetable--even" if index % 2 else None
            cache_key = (key, self._revision[key], self._layout, component, self.has_focus)
            strip, style = self._strip(cache_key, self._rows[key], component)
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    def _strip(self, cache_key: tuple[object, ...], cells: list[Text], component: str | None) -> tuple[Strip, Style]:
        """The row rendered at full width, and its background style (cached)."""
        cached = self._strips.get(cache_key)
        if cached is not None:
            return cached
        line = Text(no_wrap=True, end="")
        for i, ((_, _, justify), cell) in enumerate(zip(self.columns, cells, strict=True)):
            pad = self.widths[i] - cell.cell_len
            line.append(" " if i == 0 else " " * GAP)
            if justify == "right":
                line.append(" " * pad)
            line.append_text(cell)
            if justify != "right":
                line.append(" " * pad)
        style = self.rich_style + (self.get_component_rich_style(component) if component else Style())
        line.stylize_before(style)
        rendered = (Strip(line.render(self.app.console), line.cell_len), style)
        self._strips[cache_key] = rendered
        return rendered
