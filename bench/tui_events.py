"""How the dashboard keeps up with a burst of events: event-to-screen latency and frame times.

A synthetic control API runs in a separate process (as the sidecar would) and streams
`request_started` / `request` pairs at a fixed rate over real SSE. The dashboard runs
headless (`App.run_test`) with its real LiveSource, parser, model and widgets, and we
measure:

- event -> screen: from the moment the server wrote an event to the end of the first
  screen refresh that shows it (wall clock; same machine), and from the moment the
  dashboard read it off the socket;
- render pass: the time of one coalesced refresh of the views, and the time from its
  start to the end of the screen refresh that follows (a frame);
- loop lag: how late a 50 ms heartbeat timer fires (what a key press would wait);
- key press: from a simulated key press to its handler running, during the burst.

    python bench/tui_events.py                 # 50 events/s for 10 s
    python bench/tui_events.py --rate 200 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web

from tui import locate
from tui.app import SidecarDashboard
from tui.records import RequestRow
from tui.source import LiveSource
from tui.widgets.requests import RequestTable

TOKEN = "bench-token"
MODELS = ("claude-opus-4-8", "claude-haiku-4-5-20251001", "claude-sonnet-5")


# ---------------------------------------------------------------- the synthetic sidecar (child process)


def _request(n: int, now: float) -> dict[str, Any]:
    return {
        "id": f"bench-{n:08d}", "ts": now, "emitted_at": now, "endpoint": "/v1/messages",
        "requested_model": MODELS[n % 3], "provider": "anthropic", "upstream_model": MODELS[n % 3],
        "route": "default", "session_id": f"session-{n % 7}", "status": 200, "outcome": "ok",
        "input_tokens": 1000 + n % 500, "output_tokens": 200 + n % 90, "cache_read_tokens": 30_000,
        "cache_write_tokens": 0, "cost_usd": 0.012 + (n % 10) / 1000, "latency_ms": 900.0, "ttft_ms": 300.0,
        "cache_outcome": "miss", "stream": True,
    }  # fmt: skip


def _serve(rate: float, ready: Connection) -> None:
    """Serve the control API with an event stream of `rate` events per second (child process)."""

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"event: hello\ndata: {\"version\": \"bench\", \"pid\": 1}\n\n")
        start = time.perf_counter()
        for i in itertools.count():
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            n, now = i // 2, time.time()
            if i % 2 == 0:
                kind, data = "request_started", {"id": f"bench-{n:08d}", "ts": now, "emitted_at": now, "model": MODELS[n % 3], "session_id": f"session-{n % 7}", "stream": True}
            else:
                kind, data = "request", _request(n, now)
            await resp.write(f"id: {i}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode())
        return resp

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"pid": 1, "version": "bench", "usage": {"timezone": "UTC"}})

    async def usage(request: web.Request) -> web.Response:
        return web.json_response({"group_by": request.query.get("group_by"), "rows": []})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/sidecar/v1/events", events)
        app.router.add_get("/sidecar/v1/status", status)
        app.router.add_get("/sidecar/v1/usage", usage)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ready.send(f"http://127.0.0.1:{runner.addresses[0][1]}")
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------- the measured dashboard


class BenchDashboard(SidecarDashboard):
    """The dashboard with timers around its render pass."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passes: list[float] = []
        self.frames: list[float] = []

    def refresh_views(self) -> None:
        """Time the pass, and the frame it leads to."""
        t0 = time.perf_counter()
        super().refresh_views()
        self.passes.append(time.perf_counter() - t0)
        self.call_after_refresh(lambda: self.frames.append(time.perf_counter() - t0))


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000


def line(name: str, values: list[float]) -> str:
    """One row of the report."""
    return f"{name:<34} p50 {pct(values, 0.5):7.1f} ms   p99 {pct(values, 0.99):7.1f} ms   max {pct(values, 1.0):7.1f} ms   (n={len(values)})"


async def run(rate: float, seconds: float, size: tuple[int, int], refresh: float) -> None:
    """Drive the dashboard at `rate` events/s for `seconds` and print the figures."""
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(rate, child), daemon=True)
    server.start()
    url = parent.recv()
    wall: list[float] = []
    local: list[float] = []
    lag: list[float] = []
    keys: list[float] = []

    def shown(rows: list[RequestRow]) -> None:
        now_wall, now = time.time(), time.perf_counter()
        for row in rows:
            wall.append(now_wall - float(row.data.get("emitted_at", now_wall)))
            local.append(now - row.received_at)

    app = BenchDashboard(LiveSource(locate.fixed(url, TOKEN)), refresh_interval=refresh)
    try:
        async with app.run_test(size=size) as pilot:
            app.query_one(RequestTable).shown_probe = shown
            while app.model.connection.state != "connected":
                await pilot.pause(0.01)
            expected = time.perf_counter() + 0.05
            end = time.perf_counter() + seconds

            def beat() -> None:
                nonlocal expected
                now = time.perf_counter()
                lag.append(max(now - expected, 0.0))
                expected = now + 0.05

            app.set_interval(0.05, beat)
            table = app.query_one(RequestTable)
            pressed: list[float] = []
            move = table.action_move

            def timed_move(step: int) -> None:
                move(step)
                if pressed:
                    keys.append(time.perf_counter() - pressed.pop())

            table.action_move = timed_move  # type: ignore[method-assign]
            while time.perf_counter() < end:
                await asyncio.sleep(0.25)
                pressed.append(time.perf_counter())
                app.simulate_key("down")
            received = len(app.model.rows)
    finally:
        server.kill()
        server.join()
    print(f"dashboard at {size[0]}x{size[1]}, render every {refresh * 1000:.0f} ms; {rate:.0f} events/s ({rate / 2:.0f} requests/s) for {seconds:.0f} s")
    print(f"rows in the table at the end: {received} (cap {app.model.max_rows}); events shown: {len(wall)}")
    print(line("event -> screen (from the server)", wall))
    print(line("event -> screen (from the socket)", local))
    print(line("render pass", app.passes))
    print(line("frame (pass -> screen refreshed)", app.frames))
    print(line("loop lag (50 ms heartbeat)", lag))
    print(line("key press -> handled", keys))
    print(f"mean render pass {statistics.fmean(app.passes) * 1000:.2f} ms over {len(app.passes)} passes")


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="events per second (half request_started, half request)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="140x40", help="terminal size WxH")
    parser.add_argument("--refresh", type=float, default=0.15, help="seconds between render passes")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.lower().split("x"))
    asyncio.run(run(args.rate, args.seconds, (width, height), args.refresh))


if __name__ == "__main__":
    main()
