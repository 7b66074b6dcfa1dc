"""The tray's worker threads: keep a `TrayState` fresh and run menu actions off the UI thread.

One thread polls the control API every `interval` seconds and whenever it is woken; a
second listens to the sidecar's event stream and wakes the first when something the tray
shows has changed (a request was priced, a route or breaker flipped, the daemon is
stopping), so spend updates within a second instead of an interval. Menu actions are
queued to the polling thread, which runs them and then refreshes at once: the UI thread
never waits on the network.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from tray.client import ControlClient, Unreachable
from tray.state import TrayState, down

log = logging.getLogger(__name__)

# Events after which the tray's picture may be stale. `hello` arrives first on every
# connection, so a sidecar that (re)started is shown at once.
REFRESH_ON = frozenset(
    {"hello", "request", "routes_changed", "breaker", "budget_threshold", "shutdown"}
)
# The ledger writes its batch a moment after the `request` event; refreshing this much later
# sees the new spend (a later poll would anyway).
SETTLE_SECONDS = 0.4
# After the event stream ends, how long to wait before reconnecting (or finding it down).
RECONNECT_SECONDS = 1.0

Job = Callable[[], None]


class Poller:
    """Publishes every new `TrayState` through `publish`; runs submitted jobs in between."""

    def __init__(
        self,
        client: ControlClient,
        publish: Callable[[TrayState], None],
        interval: float = 5.0,
        on_job_error: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.publish = publish
        self.interval = interval
        self.on_job_error = on_job_error
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._last: TrayState | None = None

    def fetch(self) -> TrayState:
        """The sidecar's state now; a down state when it does not answer."""
        try:
            return self.client.fetch_state()
        except Unreachable as e:
            return down(str(e))

    def start(self, first: TrayState | None = None) -> None:
        """Start polling and listening; `first` is what is already shown."""
        self._last = first
        for name, target in (("tray-poll", self._poll_loop), ("tray-events", self._event_loop)):
            # Daemon threads: a blocked read of the event stream must not keep the tray alive.
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop both threads (the event listener ends at its next read)."""
        self._stop.set()
        self._wake.set()

    def refresh_soon(self) -> None:
        """Poll now instead of at the end of the interval."""
        self._wake.set()

    def submit(self, job: Job) -> None:
        """Run `job` on the polling thread, then refresh."""
        self._jobs.put(job)
        self._wake.set()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._run_jobs()
            state = self.fetch()
            if state != self._last and not self._stop.is_set():
                self._last = state
                try:
                    self.publish(state)
                except Exception:
                    log.exception("updating the tray icon failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    def _run_jobs(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            try:
                job()
            except Exception as e:
                message = str(e) or type(e).__name__
                log.warning("tray action failed: %s", message)
                log.debug("tray action failed", exc_info=True)
                if self.on_job_error is not None:
                    self.on_job_error(message)

    def _event_loop(self) -> None:
        connected, delay = False, 0.0
        while not self._stop.wait(delay):
            try:
                for kind in self.client.events(self._stop):
                    connected = True
                    if kind in REFRESH_ON:
                        self._stop.wait(SETTLE_SECONDS)
                        self._wake.set()
            except Unreachable:
                if connected:  # it has just gone away
                    self._wake.set()
                connected, delay = False, self.interval
                continue
            # The stream ended: the daemon is stopping or restarting. Look again soon.
            self._wake.set()
            delay = RECONNECT_SECONDS
