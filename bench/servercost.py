"""What an HTTP server costs per request before any handler work: aiohttp's web server against a
bare httptools protocol, both answering a Messages POST with a fixed 600-byte JSON reply.

The sidecar's listener is aiohttp's server; its fast path (sidecar/proxy/lane.py) parses plain
`POST /v1/messages` requests itself for the difference this measures. Each server is a child
process on uvloop; the load generator (aiohttp ClientSession) sends the same body to both in
alternating blocks, and the figure is each child's own CPU time per request.

    python bench/servercost.py                 # 76 KB main-turn body, c=8, about 20 s
    python bench/servercost.py --body 2k --requests 3000

All traffic stays on 127.0.0.1; the children are stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPLY = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "hello " * 80}],
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }
).encode()
TICK = os.sysconf("SC_CLK_TCK")


def serve_aiohttp(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=REPLY, headers={"content-type": "application/json", "request-id": "req_bench"})

    app = web.Application(client_max_size=1 << 26)
    app.router.add_post("/v1/messages", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


def serve_httptools(port: int) -> None:
    import httptools
    import uvloop

    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: req_bench\r\ncontent-length: %d\r\n\r\n"

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport  # uvloop's transports are not asyncio.Transport subclasses
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []
            self.headers: list[tuple[bytes, bytes]] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            b"".join(self.body)
            self.body, self.headers = [], []
            asyncio.get_running_loop().create_task(self.answer())

        async def answer(self) -> None:
            self.transport.write(head % len(REPLY) + REPLY)

    async def main() -> None:
        await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def load(port: int, body: bytes, n: int, c: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s:

        async def worker(k: int) -> None:
            for _ in range(k):
                async with s.post(f"http://127.0.0.1:{port}/v1/messages", data=body, headers={"content-type": "application/json"}) as r:
                    await r.read()

        await asyncio.gather(*(worker(n // c) for _ in range(c)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--body", choices=("2k", "76k"), default="76k")
    ap.add_argument("--requests", type=int, default=4000, help="per server per block")
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--serve", choices=("aiohttp", "httptools"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        (serve_aiohttp if args.serve == "aiohttp" else serve_httptools)(args.port)
        return

    import uvloop

    from bench.overhead import load_workload

    body = load_workload(args.body, None).json_body
    kids = {}
    try:
        for name in ("aiohttp", "httptools"):
            port = free_port()
            kids[name] = (subprocess.Popen([sys.executable, __file__, "--serve", name, "--port", str(port)]), port)
        time.sleep(1.5)
        per_req: dict[str, list[float]] = {n: [] for n in kids}
        rate: dict[str, list[float]] = {n: [] for n in kids}
        for block in range(args.blocks):
            for name in kids if block % 2 == 0 else reversed(list(kids)):
                proc, port = kids[name]
                uvloop.run(load(port, body, 400, args.concurrency))  # warm the connections
                c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                uvloop.run(load(port, body, args.requests, args.concurrency))
                wall = time.perf_counter() - t0
                per_req[name].append((cpu_seconds(proc.pid) - c0) / args.requests * 1e6)
                rate[name].append(args.requests / wall)
        print(f"server CPU per request, {len(body):,} B body, c={args.concurrency}, {args.blocks} blocks of {args.requests}")
        for name in kids:
            us = sorted(per_req[name])
            print(f"  {name:9s} {us[len(us) // 2]:6.0f} us (blocks {', '.join(f'{u:.0f}' for u in per_req[name])}), {sorted(rate[name])[len(us) // 2]:,.0f} req/s")
        a, h = sorted(per_req["aiohttp"]), sorted(per_req["httptools"])
        print(f"  aiohttp's server costs {a[len(a) // 2] - h[len(h) // 2]:.0f} us more per request ({a[len(a) // 2] / h[len(h) // 2]:.2f}x)")
    finally:
        for proc, _ in kids.values():
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
