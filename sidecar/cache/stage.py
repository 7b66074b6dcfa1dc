"""The cache stage: answers repeated requests from stored answers, and stores new ones.

On the request path it computes the keys (sidecar.cache.keys), looks up the exact tier,
then, where allowed, the semantic tier, and either returns a Reply (a hit, replayed as SSE
or JSON) or adds a `MessageCollector` to the response filters. When a complete answer
went to the client, `on_complete` stores it in the background.

Every sqlite call runs in the database thread of `Entries` and every embedding in the
embedder's thread: the event loop only hashes, looks at dicts and waits (a miss does not
even wait). A failure of the cache itself is logged and the request goes upstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.cache import plan as plans
from sidecar.cache.config import CacheConfig
from sidecar.cache.embedder import Embedder, Vector
from sidecar.cache.entries import Entries, Meta
from sidecar.cache.guards import eligible
from sidecar.cache.keys import CacheKeys, KeyMemo, Uncacheable
from sidecar.cache.normalise import Normaliser, mentions_time
from sidecar.cache.replay import (
    MessageCollector,
    answer_text,
    replay_body,
    semantic_view,
    unstorable,
)
from sidecar.cache.semantic import Candidate, SemanticIndex, agreement, decide
from sidecar.cache.store import COUNTERS, CacheStore, Entry, summary
from sidecar.config import Config
from sidecar.ledger.pricing import Pricing
from sidecar.paths import Paths
from sidecar.pipeline import EventFilter, Reply, RequestContext
from sidecar.protocol.anthropic import MessageSummary
from sidecar.storage.batch import BatchWriter
from sidecar.tasks import TaskSet

log = logging.getLogger(__name__)

SWEEP_SECONDS = 60.0
SHADOW_AGREEMENT = 0.8  # a would-be hit whose answer overlaps the new one this much "agreed"
CANDIDATES = 5  # nearest stored prompts checked against the guards
MESSAGES_ENDPOINT = "/v1/messages"
_COUNTER = {"hit-exact": "hits_exact", "hit-semantic": "hits_semantic", "miss": "misses", "shadow-hit": "misses", "bypass": "bypass"}


@dataclass
class _Shadow:
    entry: Entry
    candidate: Candidate


@dataclass
class _Pending:
    """What the stage remembers about a request between lookup and completion."""

    keys: CacheKeys
    level: int
    collector: MessageCollector | None = None
    semantic: bool = False  # the prompt may be matched, so the stored entry gets a vector
    vector: Vector | None = None
    job: asyncio.Future[Vector | None] | None = None  # an embedding that missed its deadline
    shadow: _Shadow | None = None


@dataclass
class _Counts:
    values: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))

    def add(self, name: str, n: float = 1) -> None:
        self.values[name] += n

    def take(self) -> dict[str, float]:
        out, self.values = self.values, dict.fromkeys(COUNTERS, 0.0)
        return out


class CacheStage:
    """The request-path stage of the response cache (see the module docstring)."""

    def __init__(
        self,
        cfg: CacheConfig,
        store: CacheStore,
        pricing: Pricing,
        embedder: Embedder | None = None,
        clock: Callable[[], float] = time.time,
        owns_embedder: bool = False,
        writer: BatchWriter | None = None,
    ) -> None:
        self.cfg = cfg
        self.pricing = pricing
        self.embedder = embedder
        self.owns_embedder = owns_embedder
        self.clock = clock
        self.normaliser = Normaliser(cfg.normalise)
        self.memo = KeyMemo(self.normaliser)
        self.entries = Entries(store, int(cfg.max_mb * 1024 * 1024), writer)
        self.read_only_tools = frozenset(cfg.read_only_tools)
        self._pending: dict[str, _Pending] = {}
        self._storing: dict[str, tuple[_Pending, dict[str, Any]]] = {}  # chosen to store, once answered
        self._counts = _Counts()
        self.entries.on_evicted = lambda n: self._counts.add("evicted", n)
        self._tasks = TaskSet()
        self._background: set[asyncio.Task[Any]] = set()  # stores and embeddings under way
        self._embedding: set[str] = set()  # keys whose own task will embed them
        self._backfilled = False
        self._closed = False

    @property
    def semantic_enabled(self) -> bool:
        """Whether the config allows the semantic tier (served or shadow)."""
        return plans.LEVELS[self.cfg.mode] >= plans.SHADOW and self.embedder is not None

    @property
    def index(self) -> SemanticIndex:
        """The prompt vectors of the semantic tier."""
        return self.entries.index

    def _vectors_since(self) -> float | None:
        return self.clock() - self.cfg.semantic_ttl_seconds if self.semantic_enabled else None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the key map (and semantic index), sweep, start the periodic sweep."""
        await self.entries.load(self._vectors_since())
        await self._sweep()
        self._tasks.spawn(self._sweeper(), name="cache-sweeper")

    async def close(self) -> None:
        """Stop background work, finish pending writes, save the counters, close the store."""
        if self._closed:
            return
        self._closed = True
        await self._tasks.close()
        self.entries.write(self.entries.store.add_counters, self._counts.take())
        try:
            await self.entries.close()
        finally:
            if self.embedder is not None and self.owns_embedder:
                self.embedder.close()

    async def settled(self) -> None:
        """Wait until every answer handed over so far is stored (and embedded, when it will be)."""
        while self._storing or self._background or self.entries.busy:
            if self._storing:  # answers still going out: each is handed over right after
                await asyncio.sleep(0.005)
                continue
            await asyncio.gather(*self._background, return_exceptions=True)
            await self.entries.drain()

    # -- the request path ---------------------------------------------------------------

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """Answer a repeated request from the cache, or arrange for its answer to be stored."""
        if ctx.count_tokens or ctx.endpoint != MESSAGES_ENDPOINT:
            return None
        p = plans.plan(self.cfg.mode, ctx.headers)
        if p.bypass:
            self._outcome(ctx, "bypass", p.reason)
            return None
        try:
            fields = None if ctx.body_replaced else ctx.head.fields  # the head's scan of this body
            keys = self.memo.keys(ctx.body, ctx.json, ctx.headers, ctx.endpoint, fields)
        except Uncacheable as e:
            self._outcome(ctx, "bypass", str(e))
            return None
        pending = _Pending(keys, p.level)
        pending.semantic = (
            p.level >= plans.SHADOW
            and self.semantic_enabled
            and keys.query is not None
            and eligible(keys.query, self.cfg.min_words) is None
        )
        try:
            reply = await self._lookup(ctx, pending) if p.lookup else None
        except Exception:
            log.exception("cache lookup failed for request %s; asking upstream", ctx.id)
            reply = None
            self._outcome(ctx, "miss", "the cache failed (see the log)")
        if reply is not None:
            return reply
        if not p.lookup:
            self._outcome(ctx, "bypass", "Cache-Control: no-cache")
        if p.store and not self._closed:
            pending.collector = MessageCollector()
            self._pending[ctx.id] = pending
        return None

    def on_response(self, ctx: RequestContext) -> EventFilter | None:
        """The collector of an answer that will be stored, or None."""
        pending = self._pending.get(ctx.id)
        return None if pending is None else pending.collector

    def _outcome(self, ctx: RequestContext, outcome: str, reason: str) -> None:
        """Record the cache's outcome: ledger column, response header, counters, decision."""
        ctx.cache_outcome = outcome
        # The client sees the documented values only; the ledger tells a shadow hit apart.
        ctx.response_headers[plans.HEADER] = "miss" if outcome == "shadow-hit" else outcome
        self._counts.add(_COUNTER[outcome])
        if outcome != "bypass":
            self._counts.add("lookups")
        ctx.decide("cache", outcome, reason)

    async def _lookup(self, ctx: RequestContext, pending: _Pending) -> Reply | None:
        keys = pending.keys
        now = self.clock()
        reason = "no stored answer"
        meta = self.entries.meta(keys.exact)
        if meta is not None:
            why = self._unservable(meta, now, self.cfg.ttl_seconds)
            if why is None and self._reasked(meta, now):
                self._outcome(ctx, "bypass", f"asked again within {self.cfg.reask_window_seconds:.0f} s: a new answer")
                return None
            entry = await self.entries.get(keys.exact) if why is None else None
            if entry is not None:
                why = self._dated(entry, keys)
                if why is None:
                    return self._hit(ctx, entry, entry.message, "hit-exact", f"made {now - entry.created_at:.0f} s ago")
            reason = f"the stored answer {why or 'is gone'}"
        if pending.level >= plans.SHADOW and self.embedder is not None:
            reply, reason = await self._semantic(ctx, pending, now, reason)
            if reply is not None:
                return reply
        self._outcome(ctx, "miss" if pending.shadow is None else "shadow-hit", reason)
        return None

    def _unservable(self, meta: Meta, now: float, ttl: float) -> str | None:
        """Why an entry is too old to serve, or None."""
        if now - meta.created_at > ttl:
            return f"has expired ({now - meta.created_at:.0f} s old)"
        return None

    def _reasked(self, meta: Meta, now: float) -> bool:
        """Whether the entry's answer went out so recently that asking again means "a new one"."""
        window = self.cfg.reask_window_seconds
        return bool(window) and now - meta.used_at < window

    def _dated(self, entry: Entry, keys: CacheKeys) -> str | None:
        """Why an answer must not be served on this request's date, or None."""
        if entry.volatile != keys.volatile and mentions_time(answer_text(entry.message)):
            return "mentions a date, and today's date differs from the entry's"
        return None

    async def _semantic(self, ctx: RequestContext, pending: _Pending, now: float, reason: str) -> tuple[Reply | None, str]:
        keys = pending.keys
        assert self.embedder is not None
        if keys.query is None or keys.bucket is None:
            return None, reason + "; semantic: the last turn is not plain user text"
        why = eligible(keys.query, self.cfg.min_words)
        if why is not None:
            return None, f"{reason}; semantic: {why}"
        if not self.index.has(keys.bucket):
            return None, reason + "; semantic: no stored prompt in this conversation"
        emb, pending.job = await self.embedder.lookup(keys.query, self.cfg.embed_timeout_ms / 1000)
        if emb.vector is None:
            self._counts.add("semantic_skipped")
            return None, f"{reason}; semantic skipped: {emb.reason}"
        pending.vector = emb.vector
        refused: list[str] = []  # why each candidate, most similar first, was not served
        for cand in self.index.search(keys.bucket, emb.vector, CANDIDATES):
            verdict = decide(keys.query, cand.query, cand.similarity, self.cfg.threshold, self.cfg.min_words)
            meta = self.entries.meta(cand.key)
            if not verdict.hit or meta is None:
                refused.append(verdict.reason if not verdict.hit else "the stored answer is gone")
                continue
            why = self._unservable(meta, now, self.cfg.semantic_ttl_seconds)
            if why is None and self._reasked(meta, now):
                why = "was given moments ago (a rephrased question wants a new answer)"
            entry = await self.entries.get(cand.key) if why is None else None
            if entry is not None:
                why = self._dated(entry, keys)
            view = semantic_view(entry.message, self.read_only_tools) if entry is not None and why is None else None
            if view is None or entry is None:
                refused.append(f"the stored answer {why or 'calls tools that are not read-only'}")
                continue
            if pending.level == plans.SHADOW:
                pending.shadow = _Shadow(entry, cand)
                self._counts.add("shadow_would_hit")
                return None, f"{reason}; shadow: would serve {cand.key[:12]} ({verdict.reason})"
            reply = self._hit(ctx, entry, view, "hit-semantic", verdict.reason)
            ctx.response_headers["x-sidecar-cache-similarity"] = f"{cand.similarity:.4f}"
            return reply, ""
        return None, f"{reason}; semantic: {refused[0] if refused else 'no stored prompt is similar'}"

    def _hit(self, ctx: RequestContext, entry: Entry, message: dict[str, Any], outcome: str, reason: str) -> Reply:
        body, ctype = replay_body(message, ctx.stream)
        ctx.provider = "cache"
        ctx.upstream_model = entry.model
        ctx.saved_usd = entry.cost_usd
        ctx.summary = MessageSummary(model=entry.model, stop_reason=message.get("stop_reason"), started=True, stopped=True)
        self._outcome(ctx, outcome, reason)
        self._counts.add("tokens_saved", entry.tokens)
        self._counts.add("usd_saved", entry.cost_usd)
        self.entries.touch(entry.exact_key, self.clock())
        return Reply(body=body, content_type=ctype)

    # -- completion ---------------------------------------------------------------------

    def on_complete(self, ctx: RequestContext) -> None:
        """Choose to store a complete answer (the audit records why not; the store itself
        is made once the answer went out, `on_answered`); log a shadow hit's agreement."""
        pending = self._pending.pop(ctx.id, None)
        if pending is None or self._closed:
            return
        col = pending.collector
        done = col is not None and col.complete and ctx.status == 200 and ctx.outcome == "ok"
        message = col.message if done and col is not None else None
        if message is None:
            return
        if pending.shadow is not None:
            self._log_shadow(ctx, pending, message)
        why = unstorable(message)
        if why is not None:
            ctx.decide("cache", "not-stored", why)
            return
        if not self.entries.reserve():  # a place for it in the store queue, or shed now
            self._shed(ctx)
            return
        self._storing[ctx.id] = (pending, message)

    def on_answered(self, ctx: RequestContext) -> None:
        """Store the answer `on_complete` chose (in the background), in the place it reserved."""
        held = self._storing.pop(ctx.id, None)
        if held is None:
            return
        if self._closed:
            self.entries.unreserve()
            return
        self._store(ctx, *held)

    def _shed(self, ctx: RequestContext) -> None:
        self._counts.add("shed")
        ctx.decide("cache", "not-stored", "too many answers are waiting to be stored")

    def _log_shadow(self, ctx: RequestContext, pending: _Pending, message: dict[str, Any]) -> None:
        shadow = pending.shadow
        assert shadow is not None
        agreed = agreement(message, shadow.entry.message)
        if agreed >= SHADOW_AGREEMENT:
            self._counts.add("shadow_agreed")
        row = {
            "request_id": ctx.id,
            "ts": self.clock(),
            "entry_key": shadow.entry.exact_key,
            "similarity": shadow.candidate.similarity,
            "query": pending.keys.query,
            "candidate_query": shadow.candidate.query,
            "agreement": round(agreed, 4),
        }
        self.entries.write(self.entries.store.add_shadow, row)

    def _store(self, ctx: RequestContext, pending: _Pending, message: dict[str, Any]) -> None:
        try:
            entry = self._entry(ctx, pending, message)
        except BaseException:
            self.entries.unreserve()
            raise
        put = self.entries.put(entry, reserved=True)
        assert put is not None  # a reserved place is never shed
        self._counts.add("stored")
        semantic = entry.semantic_ok
        if not semantic and (self._backfilled or self.embedder is None):
            return  # nothing to wait for: the batch writes it, and counts what it evicts
        if semantic:
            self._embedding.add(entry.exact_key)
        task = self._tasks.spawn(self._stored(entry, put, pending if semantic else None), name=f"cache-store-{ctx.id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _entry(self, ctx: RequestContext, pending: _Pending, message: dict[str, Any]) -> Entry:
        keys, u = pending.keys, ctx.summary.usage
        model = message.get("model") if isinstance(message.get("model"), str) else ctx.upstream_model
        cost, _ = self.pricing.cost(
            ctx.provider, model, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens
        )
        semantic = pending.semantic and semantic_view(message, self.read_only_tools) is not None
        now = self.clock()
        return Entry(
            exact_key=keys.exact,
            prefix_key=keys.prefix,
            message=message,
            created_at=now,
            used_at=now,
            bucket_key=keys.bucket if semantic else None,
            query=keys.query if semantic else None,
            volatile=keys.volatile,
            model=model,
            provider=ctx.provider,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            cost_usd=cost,
            semantic_ok=semantic,
        )

    async def _stored(self, entry: Entry, put: asyncio.Future[list[str]], pending: _Pending | None) -> None:
        """For the semantic tier, embed the stored prompt once it is stored (no deadline here)."""
        try:
            await put
            if pending is None:
                return
            assert self.embedder is not None and entry.query is not None
            vector = pending.vector
            if vector is None and pending.job is not None:
                vector = await pending.job  # the lookup's embedding that missed its deadline
            if vector is None:
                vector = await self.embedder.embed(entry.query)
            if vector is not None:
                await self.entries.set_vector(entry, vector)
        finally:
            self._embedding.discard(entry.exact_key)
        if not self._backfilled and self.embedder is not None and self.embedder.state == "ready":
            self._backfilled = True
            await self._backfill()

    async def _backfill(self) -> None:
        """Embed stored prompts that were saved while the model was not available."""
        assert self.embedder is not None
        for key, bucket, query in await self.entries.unembedded(self.clock() - self.cfg.semantic_ttl_seconds):
            if key in self._embedding:
                continue  # its own task embeds it
            vector = await self.embedder.embed(query)
            if vector is not None:
                await self.entries.set_vector((key, bucket, query), vector)

    # -- maintenance --------------------------------------------------------------------

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self._sweep()
            except Exception:
                log.exception("cache sweep failed")

    async def _sweep(self) -> None:
        """Delete expired entries, drop stale vectors, save the counters."""
        await self.entries.sweep(self.clock() - self.cfg.ttl_seconds, self._vectors_since())
        await self.entries.run(self.entries.store.add_counters, self._counts.take())

    async def stats(self) -> dict[str, Any]:
        """The cache's figures for `cache stats` and the control API."""
        saved = await self.entries.run(self.entries.store.counters)
        for k, v in self._counts.values.items():
            saved[k] += v
        entries, size = await self.entries.run(self.entries.store.sizes)
        out = summary(self.cfg.mode, saved, entries, size, self.entries.max_bytes)
        if self.semantic_enabled:
            assert self.embedder is not None
            out.update(
                threshold=self.cfg.threshold, indexed=len(self.index), embedder=self.embedder.state,
                embedder_error=self.embedder.error,
            )  # fmt: skip
        return out

    async def clear(self) -> int:
        """Delete every stored answer (the counters stay); returns how many there were."""
        return await self.entries.clear()


async def open_cache(
    cfg: Config, paths: Paths, pricing: Pricing, embedder: Embedder | None = None, writer: BatchWriter | None = None
) -> CacheStage:
    """Open the cache stage for `cfg` (store in `paths.db_file`); close it with `await stage.close()`.

    The embedding model is not loaded here: the semantic tier loads it on first use. Pass
    `embedder` to share one (it is then not closed with the stage), `writer` to write
    through the daemon's one batch writer.
    """
    store = await asyncio.to_thread(CacheStore.open, paths.db_file)
    owned = embedder is None and plans.LEVELS[cfg.cache.mode] >= plans.SHADOW
    stage = CacheStage(cfg.cache, store, pricing, Embedder() if owned else embedder, owns_embedder=owned, writer=writer)
    try:
        await stage.start()
    except BaseException:
        await stage.close()
        raise
    return stage
