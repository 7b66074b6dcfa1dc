"""The lean client's pool, driven directly: a pooled connection holding bytes nobody asked
for is never handed to the next request, however the event loop orders its callbacks."""

from __future__ import annotations

import asyncio

from sidecar.providers.h1 import H1Pool


def answer(marker: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(marker), marker)


async def test_a_late_second_answer_already_received_is_never_served_to_the_next_request() -> None:
    ghost_written = asyncio.Event()
    handlers: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        n = 0
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            n += 1
            marker = head.split(b"x-marker: ", 1)[1].split(b"\r\n", 1)[0]
            writer.write(answer(marker))
            await writer.drain()
            if n == 1:
                await asyncio.sleep(0.05)
                writer.write(answer(b"ghost"))  # a second answer to the first request
                await writer.drain()
                ghost_written.set()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = H1Pool(f"http://127.0.0.1:{port}", 5.0, 5.0)
    try:
        resp = await pool.request("GET", "/a", [("x-marker", "A")], b"")
        assert await resp.read() == b"A"
        # Wake up right after the ghost reached our socket and before the loop read it
        # (the wake-up is queued ahead of the read): the request must not take that connection.
        await ghost_written.wait()
        resp = await pool.request("GET", "/b", [("x-marker", "B")], b"")
        assert await resp.read() == b"B"
    finally:
        pool.close()
        server.close()
        await server.wait_closed()
        async with asyncio.timeout(5):
            await asyncio.gather(*handlers, return_exceptions=True)  # each ends when the pool hangs up
