"""What every dashboard view shares: which model sections it shows, and theme-aware text."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from tui.state import Dashboard


class ModelView:
    """A widget that renders some sections of the Dashboard (mix in before the Widget class).

    The app calls `show()` only when one of `SECTIONS` changed, or, for views that count
    down, when the clock moved on by `TICK` seconds; so a burst of events costs one render.
    """

    SECTIONS: ClassVar[tuple[str, ...]] = ()
    TICK: ClassVar[float] = 0.0

    def render_key(self, model: Dashboard) -> tuple[float, ...]:
        """Changes whenever the view has something new to show."""
        key = tuple(float(model.versions[s]) for s in self.SECTIONS)
        if self.TICK:
            key += (model.clock.now() // self.TICK,)
        return key

    def show(self, model: Dashboard) -> None:
        """Render the model."""
        raise TypeError(f"{type(self).__name__} must define show()")


class TextView(ModelView, Static):
    """A view that is one block of content markup."""

    _shown: str | None = None

    def set_text(self, markup: str) -> None:
        """Show `markup`; skip an identical update, and lay the screen out again only when
        the lines changed length (a wrapped line may have changed the height)."""
        if markup == self._shown:
            return
        resized = self._shown is None or _shape(markup) != _shape(self._shown)
        self._shown = markup
        self.update(markup, layout=resized)


def _shape(markup: str) -> list[int]:
    return [len(line) for line in markup.split("\n")]


def tint(widget: Widget, text: str, variable: str | None) -> Text:
    """`text` coloured with a theme variable (`success`, `warning`, `error`, ...); plain if None."""
    if variable is None:
        return Text(text)
    colour = widget.app.theme_variables.get(variable)
    return Text(text, style=colour or "")


def status_colour(status: int | None, outcome: str) -> str | None:
    """The theme variable for a request's outcome."""
    if outcome in ("in_flight",):
        return "accent"
    if outcome == "lost" or status is None:
        return "warning"
    if status >= 400 or outcome not in ("ok",):
        return "error"
    return "success"
