"""Process life cycle: stop cleanly on SIGTERM and SIGINT, on every platform."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` when the process gets SIGTERM or SIGINT (Ctrl-C), so it can shut down cleanly.

    Only the main thread can own signal handlers; elsewhere (an app run inside a test's
    thread) this does nothing. On Windows the loop has no signal API, so a plain handler
    hands the event to the loop's thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if sys.platform == "win32":
            signal.signal(sig, lambda _sig, _frame: loop.call_soon_threadsafe(stop.set))
        else:
            loop.add_signal_handler(sig, stop.set)
