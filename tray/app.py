"""The tray process: pystray's loop on the main thread, the sidecar polled from workers.

`run()` is what `claude-sidecar tray` calls. It refuses with `TrayUnavailable` when there
is no display or no tray, shows the current state at once, then lets `tray.worker.Poller`
publish every change; each change is rendered by the pure functions (`render_icon`,
`tooltip`, `menu_model`) and handed to the icon through `tray.backend.Presenter`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

from sidecar.paths import Paths
from tray import actions
from tray.alerts import ThresholdWatch
from tray.backend import (
    Presenter,
    TrayUnavailable,
    backend_name,
    build_menu,
    check_display,
    check_tray_host,
    load_pystray,
)
from tray.client import ControlClient
from tray.menu import Action, Do, menu_model
from tray.render import render_icon, tooltip
from tray.state import TrayState
from tray.worker import Poller

log = logging.getLogger(__name__)

QUIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)
QUIT_GRACE_SECONDS = 5.0

__all__ = ["TrayApp", "TrayUnavailable", "run"]


class TrayApp:
    """One tray icon bound to the sidecar of one installation (its `Paths`)."""

    def __init__(self, paths: Paths, interval: float = 5.0) -> None:
        self.paths = paths
        self.client = ControlClient(paths)
        self.poller = Poller(self.client, self.show, interval, on_job_error=self._action_failed)
        self.watch = ThresholdWatch()
        self.pystray: Any = None
        self.presenter: Presenter | None = None
        self._shown = threading.Event()  # the loop runs and the icon is up: stopping is safe
        self._stopping = threading.Event()
        self._owns_process = False  # run() is this process: it may exit it

    def run(self) -> None:
        """Show the icon until Quit, SIGTERM or SIGINT; raises TrayUnavailable without a tray."""
        check_display()
        self.pystray = load_pystray()
        name = backend_name(self.pystray)
        check_tray_host(name)
        first = self.poller.fetch()
        self.watch.update(first)
        icon = self.pystray.Icon(
            "claude-sidecar",
            render_icon(first),
            tooltip(first),
            build_menu(self.pystray, menu_model(first), self.act),
        )
        self.presenter = presenter = Presenter(icon, name)
        log.info("tray started with the %s backend", name)
        undo = self._quit_on_signals()
        self._owns_process = True
        try:
            icon.run(lambda icon: self._setup(presenter, first))
        finally:
            self.poller.stop()
            undo()

    def _setup(self, presenter: Presenter, first: TrayState) -> None:
        try:
            presenter.reveal()
            self.poller.start(first)
        finally:
            self._shown.set()

    def show(self, state: TrayState) -> None:
        """Render `state` onto the icon and raise any budget alerts (called by the poller)."""
        if self.presenter is None:
            return
        menu = build_menu(self.pystray, menu_model(state), self.act)
        self.presenter.show(render_icon(state), tooltip(state), menu)
        for alert in self.watch.update(state):
            if not self.presenter.notify(alert.title, alert.message):
                log.warning("%s: %s", alert.title, alert.message)

    def act(self, action: Action) -> None:
        """Do what a menu item asks; anything that waits runs on the worker thread."""
        if action.do is Do.QUIT:
            self.quit()
            return
        self.poller.submit(lambda: self._do(action))

    def _do(self, action: Action) -> None:
        if action.do is Do.TOGGLE_ROUTE and action.route is not None:
            self.client.set_route(action.route, bool(action.enable))
        elif action.do is Do.STOP:
            self.client.shutdown()
        elif action.do is Do.START:
            actions.start_sidecar()
        elif action.do is Do.OPEN_TUI:
            actions.open_tui()
        elif action.do is Do.OPEN_LOGS:
            actions.open_logs(self.paths.log_file)

    def quit(self) -> None:
        """Stop the icon's loop (from any thread; once)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._owns_process:
            # A backend loop that misses its stop request must not keep the tray alive:
            # pystray's xorg loop did so often until Presenter flushed after each call.
            watchdog = threading.Timer(QUIT_GRACE_SECONDS, _exit_stuck)
            watchdog.daemon = True  # a loop that does end lets the process exit at once
            watchdog.start()
        if self.presenter is not None:
            self.presenter.stop()

    def _action_failed(self, message: str) -> None:
        if self.presenter is not None:
            self.presenter.notify("claude-sidecar", message)

    def _quit_on_signals(self) -> Callable[[], None]:
        """Quit on SIGTERM or SIGINT; returns a function that puts the old handlers back.

        The OS may deliver a signal to any thread, and Python runs its handler only when the
        main thread next wakes, which inside the backend's event loop can be never. The
        signal's byte on the wakeup socket wakes a thread of ours instead.
        """
        receiver, sender = socket.socketpair()
        sender.setblocking(False)
        old_fd = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
        old = {sig: signal.signal(sig, lambda signum, frame: None) for sig in QUIT_SIGNALS}

        def watch() -> None:
            with receiver:
                if receiver.recv(1):
                    # A stop racing the backend's own start-up can hang it (xorg does).
                    self._shown.wait(QUIT_GRACE_SECONDS)
                    self.quit()

        threading.Thread(target=watch, name="tray-signals", daemon=True).start()

        def undo() -> None:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            sender.close()  # the watcher reads the end of the stream and leaves

        return undo


def _exit_stuck() -> None:
    log.warning(
        "the tray's event loop did not stop within %.0f s; exiting anyway", QUIT_GRACE_SECONDS
    )
    logging.shutdown()
    os._exit(0)


def run(paths: Paths, interval: float = 5.0) -> None:
    """Run the tray icon for the sidecar found through `paths`."""
    TrayApp(paths, interval).run()
