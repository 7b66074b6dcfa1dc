"""Everything that touches pystray: loading it, checking for a tray, building its menu, and
handing updates to the UI thread the way each backend needs.

pystray picks its backend at import (``PYSTRAY_BACKEND`` overrides: appindicator, gtk,
xorg, darwin, win32) and on headless Linux the import itself fails with an Xlib error,
not an ImportError, so it is imported here, lazily, only inside the tray process.
Updates come from a worker thread: gtk and appindicator queue them on their main loop,
xorg sends them to its event thread and win32 posts window messages, so those are called
directly; AppKit must be called on the main thread, so darwin goes through callAfter.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from PIL import Image

from tray.menu import Action, MenuEntry


class TrayUnavailable(Exception):
    """This session has no display or no system tray; the message says which and what to do."""


def check_display(env: Mapping[str, str] | None = None, platform: str = sys.platform) -> None:
    """Refuse early on a Unix machine with no graphical session."""
    env = os.environ if env is None else env
    if platform in ("darwin", "win32"):
        return
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        raise TrayUnavailable(
            "no display: the tray needs a graphical session (DISPLAY and WAYLAND_DISPLAY are unset); "
            "use claude-sidecar status or claude-sidecar tui instead"
        )


def load_pystray() -> ModuleType:
    """Import pystray, or say why this session cannot show a tray icon."""
    try:
        import pystray
    except Exception as e:  # Xlib.error.DisplayNameError, ImportError, ValueError from gi, ...
        detail = str(e).strip() or type(e).__name__
        raise TrayUnavailable(f"no tray support in this session: {detail}") from None
    module: ModuleType = pystray
    return module


def backend_name(pystray: ModuleType) -> str:
    """The backend pystray chose: xorg, gtk, appindicator, darwin, win32 or dummy."""
    name = str(pystray.Icon.__module__).rsplit(".", 1)[-1].lstrip("_")
    return "dummy" if name == "base" else name  # the dummy backend's Icon is the base class


def check_tray_host(name: str) -> None:
    """On the xorg backend, refuse when no system tray owns the X selection (the icon would
    never appear: GNOME, for one, shows legacy tray icons only with an extension)."""
    if name != "xorg":
        return
    from Xlib import X, display

    try:
        d = display.Display()
        try:
            owner = d.get_selection_owner(
                d.intern_atom(f"_NET_SYSTEM_TRAY_S{d.get_default_screen()}")
            )
        finally:
            d.close()
    except Exception as e:  # Xlib raises its own error classes, none of them an OSError
        raise TrayUnavailable(f"cannot ask the X display for its system tray: {e}") from None
    if owner == X.NONE:
        raise TrayUnavailable(
            "no system tray on this display (nothing owns _NET_SYSTEM_TRAY_S0); on GNOME install the "
            "AppIndicator extension, or use claude-sidecar tui"
        )


def build_menu(
    pystray: ModuleType, entries: list[MenuEntry], on_action: Callable[[Action], None]
) -> Any:
    """A pystray Menu for `entries`; choosing an item calls `on_action` with its action."""
    items = []
    for entry in entries:
        if entry.separator:
            items.append(pystray.Menu.SEPARATOR)
            continue
        items.append(
            pystray.MenuItem(
                entry.text,
                _callback(entry.action, on_action),
                checked=None if entry.checked is None else _constant(entry.checked),
                default=entry.default,
                enabled=entry.action is not None,
            )
        )
    return pystray.Menu(*items)


def _callback(
    action: Action | None, on_action: Callable[[Action], None]
) -> Callable[[Any, Any], None] | None:
    if action is None:
        return None

    def chosen(icon: Any, item: Any) -> None:
        on_action(action)

    return chosen


def _constant(value: bool) -> Callable[[Any], bool]:
    return lambda item: value


class Presenter:
    """Applies icon, title and menu changes from any thread, serialised and marshalled."""

    def __init__(self, icon: Any, name: str) -> None:
        self.icon = icon
        self.name = name
        self._lock = threading.Lock()
        self._on_main = _marshaller(name)
        if name == "xorg":
            self._hear_clicks()

    def reveal(self) -> None:
        """Make the icon visible (pystray's setup callback must do this itself)."""
        with self._lock:
            self.icon.visible = True
            self._flush()

    def show(self, image: Image.Image, title: str, menu: Any) -> None:
        """Replace the icon's picture, title and menu."""
        if self.name == "xorg":
            # The X window name is a Latin-1 STRING property; anything else would raise.
            title = title.encode("latin-1", "replace").decode("latin-1")

        def apply() -> None:
            with self._lock:
                self.icon.icon = image
                self.icon.title = title
                self.icon.menu = menu
                self._flush()

        self._on_main(apply)

    def notify(self, title: str, message: str) -> bool:
        """Show a desktop notification where the backend has them; False where it has none."""
        if not getattr(self.icon, "HAS_NOTIFICATION", False):
            return False
        self._on_main(lambda: self.icon.notify(message, title))
        return True

    def stop(self) -> None:
        """End the icon's main loop (safe from any thread)."""

        def apply() -> None:
            # Serialised with updates: the xorg backend hands every call's result back
            # through one shared queue, so two calls in flight could swap their results.
            with self._lock:
                self.icon.stop()
                self._flush()

        self._on_main(apply)

    def _hear_clicks(self) -> None:
        # pystray's xorg icon window handles button presses but never selects them, so the X
        # server delivers none and a click does nothing. Select them before the loop runs.
        from Xlib import X

        window, display = getattr(self.icon, "_window", None), getattr(self.icon, "_display", None)
        if window is not None and display is not None:
            window.change_attributes(
                event_mask=X.ExposureMask | X.StructureNotifyMask | X.ButtonPressMask
            )
            display.flush()

    def _flush(self) -> None:
        # pystray's xorg backend runs each call on its event thread, which then flushes the
        # X requests the call made. python-xlib skips that flush while our thread is still
        # finishing its own send, and the event thread goes back to waiting for events with
        # the requests unsent (a destroyed window that never goes, a picture never drawn).
        # Flushing again from this thread, after the call has returned, sends them.
        display = getattr(self.icon, "_display", None) if self.name == "xorg" else None
        if display is not None:
            display.flush()


def _marshaller(name: str) -> Callable[[Callable[[], None]], None]:
    if name == "darwin":
        from PyObjCTools import AppHelper

        return AppHelper.callAfter  # type: ignore[no-any-return]
    return lambda f: f()
