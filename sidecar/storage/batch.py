"""One batched writer for every local SQLite store (the ledger, the audit log, the cache).

Each store is a `Sink`: `add()` queues an item on the event loop in O(1) (a deque append;
a timer is armed only when the queue was empty) and never hops to a thread. The
`BatchWriter` owns ONE worker thread ("sidecar-db"). When a sink is due (its `delay` after
its first waiting item, at once for `flush()` or `call()`), the writer takes the next batch
of every sink due by then and writes them all in ONE trip to that thread, each batch in its
own transaction on its own sink's connection (the sink's `write` function). One thread
means one thread handing the interpreter lock to the request path instead of three, and a
trip per interval instead of a hop per request.

A batch whose `write` raises goes to the sink's `on_failed`: retried (put back at the front
of its queue, due again after a backoff while the other sinks carry on) or given up. The
sink isolates rows sqlite refuses itself, and does its own bookkeeping (journal release,
head file) in `on_written`, on the loop, after the commit. `flush()` waits until everything
added so far is written or given up; `call(fn)` runs `fn` in the thread after everything
added before it (the cache's reads keep their order with its stores); a sink with `limit`
sheds what would wait beyond it (counted in `shed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
BATCH_SIZE = 500
# Items wait this long to share one transaction: one write per request would cost more CPU
# than the proxying itself (bench/overhead.py). flush() skips the wait. The journal
# (sidecar.ledger.journal) holds ledger rows and audit entries meanwhile, so a crash loses none.
FLUSH_INTERVAL = 0.2
RETRY_DELAYS = (0.1, 0.5, 2.0, 5.0)  # seconds before the 1st, 2nd, 3rd, ... retry of a batch
COALESCE = 0.05  # a sink due this soon rides along with a trip that goes now
THREAD_NAME = "sidecar-db"


class _Call:
    """A function to run in the writer thread after the items added before it."""

    __slots__ = ("args", "fn", "future")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.future: Future[Any] = Future()

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args)
        except BaseException as e:  # handed to whoever waits on the future
            self.future.set_exception(e)
        else:
            self.future.set_result(result)


_Job = list[Any] | _Call  # a batch of a sink's items, or a call


class Sink(Generic[T]):
    """One store's queue on a `BatchWriter`: what to write, how often, and what to do after."""

    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], Any],
        *,
        delay: float = FLUSH_INTERVAL,
        batch_size: int = BATCH_SIZE,
        limit: int | None = None,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        on_take: Callable[[list[T]], None] | None = None,
        on_written: Callable[[list[T], Any], None] | None = None,
        on_failed: Callable[[list[T], Exception, int], bool] | None = None,
    ) -> None:
        self.name = name
        self.write = write  # in the writer thread: one transaction; raises to fail the batch
        self.delay = delay
        self.batch_size = batch_size
        self.limit = limit  # items waiting or being written; past it `add` sheds
        self.retry_delays = retry_delays
        self.on_take = on_take  # on the loop, as a batch leaves for the thread
        self.on_written = on_written  # on the loop, after the batch is committed
        self.on_failed = on_failed  # on the loop: (batch, error, failures in a row) -> retry?
        self.closing = False  # retries go at once (the owner is closing)
        self.writer: BatchWriter | None = None
        self.queue: deque[T | _Call] = deque()
        self.accepted = 0  # items added so far
        self.done = 0  # items written (or given up on) so far
        self.shed = 0  # items refused because `limit` were waiting
        self.reserved = 0  # places promised by reserve() to items not yet added
        self.failures = 0  # failed writes in a row
        self.due: float | None = None  # loop time the next batch goes (None: nothing waits)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def pending(self) -> int:
        """Items added but not yet written (or given up on)."""
        return self.accepted - self.done

    def add(self, item: T, *, reserved: bool = False) -> bool:
        """Queue `item` for the next batch; False when it is shed (`limit` are waiting or
        promised). `reserved`: the item takes the place a `reserve()` promised."""
        if reserved:
            self.reserved -= 1
        elif self.limit is not None and self.accepted - self.done + self.reserved >= self.limit:
            self.shed += 1
            return False
        self.queue.append(item)
        self.accepted += 1
        if self.due is None and self.writer is not None:
            self.writer.schedule(self, self.delay)
        return True

    def reserve(self) -> bool:
        """Promise a place to an item that will be added later (`add(item, reserved=True)`,
        or given back with `unreserve()`); False, counted as shed, when there is none."""
        if self.limit is not None and self.accepted - self.done + self.reserved >= self.limit:
            self.shed += 1
            return False
        self.reserved += 1
        return True

    def unreserve(self) -> None:
        """Give back a place `reserve()` promised."""
        self.reserved -= 1

    def call(self, fn: Callable[..., T | Any], *args: Any) -> Future[Any]:
        """Run `fn(*args)` in the writer thread after every item added so far is written."""
        if self.writer is None:
            raise RuntimeError(f"{self.name}: call() on a sink without a writer")
        job = _Call(fn, args)
        self.queue.append(job)
        self.writer.schedule(self, 0.0)
        return job.future

    def urgent(self) -> None:
        """Write what waits now, without the delay."""
        if self.writer is not None and self.queue:
            self.writer.schedule(self, 0.0)

    async def flush(self) -> None:
        """Wait until every item added so far is written (or given up on)."""
        target = self.accepted
        if self.done >= target:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        self.urgent()
        await fut

    def _take(self, now: float) -> list[_Job]:
        """The jobs of the next trip: up to `batch_size` items, cut by the calls among them."""
        jobs: list[_Job] = []
        batch: list[T] = []
        while self.queue and len(batch) < self.batch_size:
            item = self.queue.popleft()
            if isinstance(item, _Call):
                if batch:
                    jobs.append(batch)
                    batch = []
                jobs.append(item)
            else:
                batch.append(item)
        if batch:
            jobs.append(batch)
        self.due = now if self.queue else None  # a full batch taken: the rest goes next
        if self.on_take is not None:
            for job in jobs:
                if not isinstance(job, _Call):
                    try:
                        self.on_take(job)
                    except Exception:  # the batch is written all the same
                        log.exception("%s: preparing a batch failed", self.name)
        return jobs

    def _written(self, batch: list[T], result: Any) -> None:
        self.failures = 0
        try:
            if self.on_written is not None:
                self.on_written(batch, result)
        finally:
            self.done += len(batch)

    def _failed(self, batch: list[T], error: Exception) -> bool:
        """Whether to retry `batch`; a batch given up on counts as done."""
        self.failures += 1
        retry = False
        if self.on_failed is not None:
            try:
                retry = self.on_failed(batch, error, self.failures)
            except Exception:  # keep the batch: it is retried after the backoff
                log.exception("%s: handling a failed batch failed", self.name)
                retry = True
        else:
            log.error("%s: %d items not written (%s)", self.name, len(batch), error)
        if not retry:
            self.done += len(batch)
        return retry

    def _notify(self) -> None:
        if not self._waiters:
            return
        waiting = []
        for target, fut in self._waiters:
            if self.done >= target:
                if not fut.done():
                    fut.set_result(None)
            else:
                waiting.append((target, fut))
        self._waiters = waiting


def _trip(work: list[tuple[Sink[Any], list[_Job]]]) -> list[list[tuple[bool, Any]]]:
    """In the writer thread: each sink's jobs in order; a failed batch stops its sink's jobs."""
    results: list[list[tuple[bool, Any]]] = []
    for sink, jobs in work:
        out: list[tuple[bool, Any]] = []
        for job in jobs:
            if isinstance(job, _Call):
                job.run()
                out.append((True, None))
                continue
            try:
                out.append((True, sink.write(job)))
            except Exception as e:  # handed to the sink's on_failed, on the loop
                out.append((False, e))
                break
        results.append(out)
    return results


class BatchWriter:
    """The one thread that writes every sink's batches (see the module docstring)."""

    def __init__(self, thread_name: str = THREAD_NAME) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sinks: list[Sink[Any]] = []
        # uvloop hands back a plain Handle (no .when()) for a time already past: keep our own.
        self._timer: asyncio.Handle | None = None
        self._timer_when = 0.0
        self._current: list[Sink[Any]] = []  # the sinks of the trip under way
        self._trip_over: asyncio.Future[None] | None = None  # resolved when that trip is handled
        self._closed = False
        self.trips = 0  # trips to the thread so far

    @property
    def busy(self) -> bool:
        """Whether a trip is under way."""
        return self._trip_over is not None

    def attach(self, sink: Sink[Any]) -> None:
        """Write `sink`'s batches from now on (what it queued before is due after its delay)."""
        if self._closed:
            raise RuntimeError("the batch writer is closed")
        sink.writer = self
        self._sinks.append(sink)
        if sink.queue:
            self.schedule(sink, sink.delay)

    async def detach(self, sink: Sink[Any]) -> None:
        """Stop writing `sink` (after the trip under way, if it carries one of its batches).
        What it still queues is left to its owner."""
        if sink in self._sinks:
            self._sinks.remove(sink)
        sink.writer = None
        sink.due = None
        while self._trip_over is not None and sink in self._current:
            await asyncio.shield(self._trip_over)

    def schedule(self, sink: Sink[Any], delay: float) -> None:
        """Have `sink` due within `delay` seconds."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if sink.due is None or when < sink.due:
            sink.due = when
        if self._trip_over is None:
            self._arm(when)

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._closed:
            return
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._go)

    def _go(self) -> None:
        """Send every due sink's next batch to the thread, in one trip."""
        self._timer = None
        if self._trip_over is not None or self._closed:
            return
        loop = self._loop
        assert loop is not None
        now = loop.time()
        work = [(s, s._take(now)) for s in self._sinks if s.due is not None and s.due <= now + COALESCE]
        work = [(s, jobs) for s, jobs in work if jobs]
        if not work:
            self._rearm()
            return
        self._current = [s for s, _ in work]
        self._trip_over = loop.create_future()
        self.trips += 1
        fut = self._pool.submit(_trip, work)

        def back(f: Future[list[list[tuple[bool, Any]]]]) -> None:
            try:
                loop.call_soon_threadsafe(self._done, work, f)
            except RuntimeError:  # the loop is gone: nothing is left to tell
                pass

        fut.add_done_callback(back)

    def _done(self, work: list[tuple[Sink[Any], list[_Job]]], fut: Future[list[list[tuple[bool, Any]]]]) -> None:
        """On the loop: hand each batch's outcome to its sink; retries go back in its queue."""
        assert self._loop is not None
        now = self._loop.time()
        try:
            results = fut.result()
        except BaseException as e:  # the thread itself failed (shut down): every batch failed
            results = [[(False, e if isinstance(e, Exception) else RuntimeError(str(e)))] for _ in work]
        try:
            for (sink, jobs), out in zip(work, results, strict=True):
                try:
                    self._settle(sink, jobs, out, now)
                except Exception:  # a sink's hook failed: the writer carries on for the others
                    log.exception("%s: handling a written batch failed", sink.name)
                sink._notify()
        finally:
            self._current = []
            over, self._trip_over = self._trip_over, None
            if over is not None:
                over.set_result(None)
            self._rearm()

    @staticmethod
    def _settle(sink: Sink[Any], jobs: list[_Job], out: list[tuple[bool, Any]], now: float) -> None:
        """One sink's outcome of a trip: done, or back at the front of its queue."""
        for i, (ok, value) in enumerate(out):
            job = jobs[i]
            if isinstance(job, _Call):
                continue
            if ok:
                sink._written(job, value)
                continue
            retry = sink._failed(job, value)
            back = ([job] if retry else []) + jobs[i + 1 :]
            for j in reversed(back):
                sink.queue.extendleft(reversed(j) if not isinstance(j, _Call) else (j,))
            if retry:
                k = min(sink.failures, len(sink.retry_delays)) - 1
                sink.due = now + (0.0 if sink.closing or k < 0 else sink.retry_delays[k])
            elif sink.queue:
                sink.due = now
            return

    def _rearm(self) -> None:
        due = [s.due for s in self._sinks if s.due is not None]
        if due:
            self._arm(min(due))

    async def close(self) -> None:
        """Wait for the trip under way, then stop the thread (sinks flush before this)."""
        if self._closed:
            return
        while self._trip_over is not None:
            await asyncio.shield(self._trip_over)
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sink in self._sinks:
            if sink.pending:
                log.error("%s: batch writer closed with %d items not written", sink.name, sink.pending)
            sink.writer = None
        self._sinks.clear()
        self._pool.shutdown(wait=True)  # the thread is idle: this only joins it
