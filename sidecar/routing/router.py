"""The router: picks a route and a target for each request, and opens the upstream's answer.

Fail before the first byte, abort after it: while nothing has reached the client, a
connect error, a timeout, a retryable status (408, 409, 429, 5xx, 529) or an in-stream
error that arrives before any content moves the request to the next target (the route's
other targets by weight, then its fallbacks), and after every target failed, round again
with exponential backoff and jitter that honours `retry-after` (bounded). A 4xx that is the
client's fault is never retried. The router knows nothing of HTTP serving: it returns the
opened answer (`Opened`), which the dispatch stage's caller relays (sidecar.proxy.relay);
once the answer has started, the relay owns it.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sidecar.config import Config
from sidecar.errors import (
    PolicyDenied,
    SidecarError,
    StreamBroken,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from sidecar.pipeline import Answer, RequestContext
from sidecar.providers.base import Attempt, Call, Provider, StaticCall
from sidecar.routing.balance import SmoothRoundRobin, weighted_order
from sidecar.routing.breaker import Breaker
from sidecar.routing.config import RouteConfig, TargetConfig
from sidecar.routing.scenario import estimate_input_tokens, scenarios
from sidecar.secrets import ResolvedKey

log = logging.getLogger(__name__)

RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})
PEEK_LIMIT = 256 * 1024  # bytes held while waiting for the first content of a stream
AFFINITY_SESSIONS = 10_000
DEFAULT_ROUTE = "default"


@dataclass
class Opened(Answer):
    """The upstream's answer, opened: its status and headers are known. A stream the router
    peeked at comes with the chunks it read (`prefix`) and the iterator it read them from
    (`chunks`), which the relay continues."""

    call: Call
    prefix: list[bytes] = field(default_factory=list)
    chunks: AsyncIterator[bytes] | None = None


@dataclass
class Slot:
    """One target with one of its provider's keys: the unit of balancing and health."""

    id: str
    provider: Provider
    model: str | None
    key: ResolvedKey | None
    weight: float
    breaker: Breaker

    @property
    def upstream(self) -> str:
        """`provider/model` as the client sees it in x-sidecar-upstream (model may be the client's)."""
        return f"{self.provider.name}/{self.model}" if self.model else self.provider.name

    def describe(self, cfg_weight: int) -> dict[str, Any]:
        """The control API's view of this slot."""
        b = self.breaker
        return {
            "id": self.id,
            "provider": self.provider.name,
            "model": self.model,
            "key": self.key.source if self.key else None,
            "weight": cfg_weight,
            "breaker": b.current(),
            "healthy": b.healthy,
            "consecutive_failures": b.consecutive,
            "requests": b.requests,
            "failures": b.failures,
            "last_used_at": b.last_used_at,
        }


@dataclass
class Route:
    """A configured route, compiled: its slots, balancing state and session affinity."""

    cfg: RouteConfig
    slots: list[Slot]
    fallbacks: list[Slot]
    weights: dict[str, int]
    enabled: bool = True
    rr: SmoothRoundRobin | None = None
    affinity: OrderedDict[str, str] = field(default_factory=OrderedDict)
    last_upstream: str | None = None

    @property
    def name(self) -> str:
        """The route's name."""
        return self.cfg.name

    def describe(self) -> dict[str, Any]:
        """The control API's view of this route."""
        m = self.cfg.match
        match: dict[str, Any] = {}
        if m.model is not None:
            match["model"] = m.model
        if m.scenario:
            match["scenario"] = list(m.scenario)
        if m.header:
            match["header"] = dict(m.header)
        if m.min_input_tokens is not None:
            match["min_input_tokens"] = m.min_input_tokens
        return {
            "name": self.name,
            "enabled": self.enabled,
            "match": match,
            "strategy": self.cfg.strategy,
            "affinity": self.cfg.affinity,
            "targets": [s.describe(self.weights[s.id]) for s in self.slots],
            "fallbacks": [s.describe(self.weights[s.id]) for s in self.fallbacks],
            "last_upstream": self.last_upstream,
        }


class _Failure(Exception):
    """One attempt failed in a way that allows the next target."""

    def __init__(self, reason: str, call: Call | None = None, error: SidecarError | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.call = call
        self.error = error
        self.retry_after = retry_after


class Router:
    """Chooses route, target and key for each request; retries and falls back before the first byte."""

    def __init__(
        self,
        cfg: Config,
        providers: dict[str, Provider],
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.on_event = on_event
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.breakers: dict[str, Breaker] = {}
        self.overrides: dict[str, bool] = {}  # enable/disable at run time, kept across reloads
        self.configure(cfg, providers)

    # -- configuration ---------------------------------------------------------------------

    def configure(self, cfg: Config, providers: dict[str, Provider]) -> None:
        """Take a (new) config: compile its routes; breakers of unchanged targets keep their state."""
        self.cfg = cfg
        self.providers = providers
        default = next((p for p in cfg.providers if p.type == "anthropic"), cfg.providers[0])
        self.default_provider = default.name
        routes = [self._compile(rc) for rc in cfg.routes]
        names = {r.name for r in routes}
        implicit = DEFAULT_ROUTE if DEFAULT_ROUTE not in names else "_default"
        self.implicit = self._compile(RouteConfig(name=implicit, targets=(TargetConfig(provider=default.name),)))
        self.routes = routes
        self.by_name = {r.name: r for r in routes}
        for name in list(self.overrides):
            if name not in self.by_name:
                del self.overrides[name]
        self._explicit_routes: dict[str, Route] = {}

    def _slots(self, route: str, targets: tuple[TargetConfig, ...], weights: dict[str, int]) -> list[Slot]:
        out: list[Slot] = []
        for t in targets:
            provider = self.providers[t.provider]
            keys: list[ResolvedKey | None] = [
                k for k in provider.keys if (not t.keys or k.source in t.keys) and k.source not in t.exclude_keys
            ] or ([] if provider.keys else [None])
            if not keys:
                log.warning("route %s: target %s/%s has no usable key after keys/exclude_keys", route, t.provider, t.model)
                continue
            for i, key in enumerate(keys):
                sid = f"{t.provider}/{t.model}#{i}" if t.model else f"{t.provider}#{i}"
                if key is not None:
                    sid = f"{t.provider}/{t.model or '*'}#{key.source}"
                breaker = self.breakers.get(sid)
                if breaker is None or breaker.cfg != self.cfg.routing.breaker:
                    breaker = self.breakers[sid] = Breaker(self.cfg.routing.breaker)
                breaker.on_change = self._breaker_event(sid)
                weights[sid] = t.weight
                out.append(Slot(sid, provider, t.model, key, t.weight / len(keys), breaker))
        return out

    def _breaker_event(self, sid: str) -> Callable[[str], None]:
        def changed(state: str) -> None:
            log.warning("target %s: circuit %s", sid, state)
            if self.on_event is not None:
                self.on_event("breaker", {"target": sid, "state": state})

        return changed

    def _compile(self, rc: RouteConfig) -> Route:
        weights: dict[str, int] = {}
        slots = self._slots(rc.name, rc.targets, weights)
        fallbacks = self._slots(rc.name, rc.fallbacks, weights)
        route = Route(rc, slots, fallbacks, weights, enabled=self.overrides.get(rc.name, rc.enabled))
        if rc.strategy == "round_robin":
            route.rr = SmoothRoundRobin([s.weight for s in slots])
        return route

    def set_enabled(self, name: str, enabled: bool) -> Route:
        """Enable or disable a configured route at run time (KeyError for an unknown name)."""
        route = self.by_name[name]
        route.enabled = enabled
        self.overrides[name] = enabled
        if self.on_event is not None:
            self.on_event("routes_changed", {"routes": self.describe()})
        return route

    def describe(self) -> list[dict[str, Any]]:
        """Every configured route, for the control API and `claude-sidecar routes`."""
        return [r.describe() for r in self.routes]

    def models(self) -> list[str]:
        """The model names the routes serve under (their model globs without wildcards, and targets' models)."""
        out: list[str] = []
        for r in self.routes:
            if not r.enabled:
                continue
            m = r.cfg.match.model
            if m and not any(c in m for c in "*?["):
                out.append(m)
            for s in r.slots:
                if s.model:
                    out.append(f"{s.provider.name}/{s.model}" if self._explicit_allowed(s.provider.name, s.model) else s.model)
        return list(dict.fromkeys(out))

    # -- matching ----------------------------------------------------------------------------

    def _explicit_allowed(self, provider: str, model: str) -> bool:
        return any(fnmatch.fnmatchcase(f"{provider}/{model}", g) for g in self.cfg.routing.allow_explicit)

    def _explicit(self, model: str | None) -> Route | None:
        """A route for an explicit `provider/model` or `provider,model` name, when allowed."""
        if not model:
            return None
        for sep in ("/", ","):
            prov, found, name = model.partition(sep)
            if found and prov in self.providers and name:
                if not self._explicit_allowed(prov, name):
                    raise PolicyDenied(
                        f"the model name {model!r} names provider {prov!r} directly, which this sidecar does not allow "
                        f"(add '{prov}/{name}' or '{prov}/*' to [routing] allow_explicit)"
                    )
                key = f"{prov}/{name}"
                route = self._explicit_routes.get(key)
                if route is None:
                    route = self._explicit_routes[key] = self._compile(
                        RouteConfig(name=f"explicit:{key}", targets=(TargetConfig(provider=prov, model=name),))
                    )
                return route
        return None

    def match(self, ctx: RequestContext) -> Route:
        """The first enabled route that matches `ctx` (or the implicit default route)."""
        explicit = self._explicit(ctx.head.model)
        if explicit is not None:
            return explicit
        scen: frozenset[str] | None = None
        for route in self.routes:
            if not route.enabled:
                continue
            m = route.cfg.match
            if m.model is not None and not fnmatch.fnmatchcase(ctx.head.model or "", m.model):
                continue
            if m.header and not all(fnmatch.fnmatchcase(ctx.headers.get(h, ""), g) for h, g in m.header.items()):
                continue
            if m.min_input_tokens is not None and estimate_input_tokens(ctx) < m.min_input_tokens:
                continue
            if m.scenario:
                if scen is None:
                    scen = scenarios(ctx, self.cfg.routing.long_context_tokens)
                if not scen.intersection(m.scenario):
                    continue
            return route
        return self.implicit

    def models_for(self, ctx: RequestContext) -> list[str | None]:
        """The models `ctx` may be served by, before it is routed: each target of the route it
        matches, fallbacks included (the client's own model where a target keeps it). No side
        effects: the policy gate prices a budget's reservation by the dearest of them."""
        route = self.match(ctx)
        return [s.model or ctx.head.model for s in (*route.slots, *route.fallbacks)] or [ctx.head.model]

    def order(self, route: Route, ctx: RequestContext) -> list[Slot]:
        """The slots to try for `ctx`, in order: the session's slot, the route's by weight, the fallbacks."""
        if route.rr is not None:
            primary = [route.slots[i] for i in route.rr.order()]
        else:
            primary = [route.slots[i] for i in weighted_order(route.slots, self.rng)]
        ordered = primary + route.fallbacks
        if route.cfg.affinity and ctx.session_id:
            sid = route.affinity.get(ctx.session_id)
            pinned = next((s for s in ordered if s.id == sid), None)
            if pinned is not None and pinned.breaker.healthy:
                ordered.remove(pinned)
                ordered.insert(0, pinned)
        return ordered

    def _remember(self, route: Route, ctx: RequestContext, slot: Slot) -> None:
        route.last_upstream = slot.upstream
        if route.cfg.affinity and ctx.session_id:
            route.affinity[ctx.session_id] = slot.id
            route.affinity.move_to_end(ctx.session_id)
            while len(route.affinity) > AFFINITY_SESSIONS:
                route.affinity.popitem(last=False)

    async def list_models(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """The models of `GET /v1/models` when routes are configured: the names the routes
        serve, after the Anthropic provider's own list when it answers."""
        listed: list[dict[str, Any]] = []
        provider = self.providers[self.default_provider]
        if provider.type == "anthropic":
            try:
                attempt = Attempt.of(ctx)
                attempt.method = "GET"  # a HEAD /v1/models, too, asks for the list
                call = await provider.send(attempt)
                body = await call.read()
                if call.status == 200:
                    data = msgspec.json.decode(body).get("data", [])
                    listed = [m for m in data if isinstance(m, dict)]
            except (SidecarError, msgspec.DecodeError, AttributeError) as e:
                log.info("GET /v1/models: the Anthropic list is unavailable (%s); listing the routes' models only", e)
        seen = {m.get("id") for m in listed}
        for name in self.models():
            if name not in seen:
                listed.append({"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"})
        return listed

    # -- dispatch ----------------------------------------------------------------------------

    async def open(self, ctx: RequestContext) -> Opened:
        """Send `ctx` upstream, trying targets in turn, and return the answer to relay."""
        route = self.match(ctx)
        ctx.route = route.name
        slots = self.order(route, ctx)
        if ctx.provider_allowed is not None:
            allowed = [s for s in slots if ctx.provider_allowed(s.provider.name)]
            if len(allowed) < len(slots):
                skipped = sorted({s.provider.name for s in slots} - {s.provider.name for s in allowed})
                ctx.decide("router", "deny" if not allowed else "reroute", f"the policy does not allow provider(s) {', '.join(skipped)}")
            if not allowed:
                raise PolicyDenied(f"the policy allows none of the providers route {route.name!r} sends to ({', '.join(skipped)})")
            slots = allowed
        primary_ids = {s.id for s in route.slots}
        first_byte = route.cfg.timeouts.first_byte or (self.cfg.routing.first_byte_timeout if ctx.stream else None)
        retry = self.cfg.routing.retry
        # With no routes configured the sidecar is a plain passthrough: the client's own
        # retry logic sees every upstream answer (no second layer of retries, and no breaker
        # that would answer in the upstream's place).
        guarded = route is not self.implicit
        rounds = retry.rounds if guarded else 0
        last: _Failure | None = None
        for rnd in range(rounds + 1):
            if rnd:
                delay = min(retry.max_delay, retry.base_delay * 2 ** (rnd - 1)) * (0.5 + self.rng.random() / 2)
                if last is not None and last.retry_after is not None:
                    if last.retry_after > retry.max_retry_after:
                        break  # the upstream asks for a longer wait than we hold a request for
                    delay = max(delay, last.retry_after)
                await self.sleep(delay)
            tried = 0
            for n, slot in enumerate(slots):
                if guarded and not slot.breaker.allows():
                    continue
                tried += 1
                # Peek at a stream's start only when another target could still take over.
                peek = rnd < rounds or n + 1 < len(slots)
                try:
                    call, it, prefix = await self._attempt(ctx, slot, first_byte, peek)
                except _Failure as f:
                    if guarded:
                        slot.breaker.failure()
                    log.info("request %s: target %s failed before the first byte: %s", ctx.id, slot.id, f.reason)
                    if last is not None and last.call is not None and last.call is not f.call:
                        last.call.close()
                    last = f
                    continue
                except BaseException:
                    # The request itself was refused (e.g. a head that cannot be sent), or the
                    # client left: no verdict on the target, so a claimed probe goes back.
                    slot.breaker.release_probe()
                    raise
                if guarded and call.status < 400:
                    slot.breaker.success()
                elif guarded:
                    slot.breaker.release_probe()  # the client's fault says nothing about the target
                if last is not None and last.call is not None:
                    last.call.close()
                self._served(ctx, route, slot, primary_ids)
                ctx.translated = call.translated
                return Opened(call, prefix, it)
            if not tried and last is None:
                raise UpstreamUnavailable(
                    f"every target of route {route.name!r} is failing (circuit open); the next probe is due within "
                    f"{self.cfg.routing.breaker.cooldown:g} s"
                )
        assert last is not None
        if last.call is not None:
            return Opened(last.call)
        raise last.error or UpstreamUnavailable(last.reason)

    def _served(self, ctx: RequestContext, route: Route, slot: Slot, primary_ids: set[str]) -> None:
        ctx.provider = slot.provider.name
        ctx.upstream_model = slot.model or ctx.head.model
        ctx.target = slot.id
        if ctx.attempts > 1 or slot.id not in primary_ids:
            ctx.fallback = slot.id
        self._remember(route, ctx, slot)

    async def _attempt(
        self, ctx: RequestContext, slot: Slot, first_byte: float | None, peek: bool
    ) -> tuple[Call, AsyncIterator[bytes] | None, list[bytes]]:
        """One try at `slot`: the Call (and, for a stream, the chunks read while peeking), or _Failure."""
        ctx.attempts += 1
        ctx.provider = slot.provider.name
        ctx.upstream_model = slot.model or ctx.head.model
        attempt = Attempt.of(ctx, model=slot.model, key=slot.key)
        opened: list[Call] = []  # the call, once the provider answered
        try:
            if first_byte is None:  # no deadline: no timer to arm and cancel per request
                return await self._open_call(slot, attempt, peek, opened)
            async with asyncio.timeout(first_byte):
                return await self._open_call(slot, attempt, peek, opened)
        except TimeoutError:
            if opened:
                opened[0].close()
            raise _Failure("timeout", error=UpstreamTimeout(f"upstream {slot.id} sent nothing within {first_byte:g} s")) from None
        except UpstreamError as e:
            raise _Failure(e.message, error=e) from None
        except StreamBroken as e:
            raise _Failure(str(e), error=UpstreamUnavailable(str(e))) from None
        except _StreamError as e:
            opened[0].close()
            raise _Failure(f"in-stream {e.error_type} before any content", StaticCall(e.envelope, 529 if e.error_type == "overloaded_error" else 500, [("content-type", "application/json")])) from None

    @staticmethod
    async def _open_call(
        slot: Slot, attempt: Attempt, peek: bool, opened: list[Call]
    ) -> tuple[Call, AsyncIterator[bytes] | None, list[bytes]]:
        call = await slot.provider.send(attempt)
        opened.append(call)
        if call.status in RETRYABLE:
            body = await call.read()
            raise _Failure(
                f"HTTP {call.status}",
                StaticCall(body, call.status, call.headers, call.request_id),
                retry_after=_retry_after(call.headers),
            )
        if not peek or not call.stream or call.status >= 400:
            return call, None, []
        it = call.chunks().__aiter__()
        prefix = await _peek(it)
        return call, it, prefix


class _StreamError(Exception):
    def __init__(self, error_type: str, envelope: bytes) -> None:
        super().__init__(error_type)
        self.error_type = error_type
        self.envelope = envelope


async def _peek(it: AsyncIterator[bytes]) -> list[bytes]:
    """Read a stream until its first content block starts (or it ends); raise _StreamError
    for a retryable in-stream error that came before any content. Only message_start (and
    a ping) is held: Anthropic sends an overload right after message_start."""
    held: list[bytes] = []
    size = 0
    tail = b""
    while size < PEEK_LIMIT:
        try:
            chunk = await it.__anext__()
        except StopAsyncIteration:
            if not held:
                raise StreamBroken("the upstream ended the stream before sending anything") from None
            return held
        held.append(chunk)
        size += len(chunk)
        scan = tail + chunk
        if b"event: error" in scan:
            joined = b"".join(held)
            start = joined.find(b"event: error")
            end = joined.find(b"\n\n", start)
            if end < 0:
                tail = scan[-64:]
                continue
            data = joined[start:end].split(b"data:", 1)[-1].strip()
            try:
                etype = msgspec.json.decode(data).get("error", {}).get("type", "api_error")
            except (msgspec.DecodeError, AttributeError):
                etype = "api_error"
            if etype in RETRYABLE_STREAM_ERRORS:
                raise _StreamError(str(etype), data)
            return held
        if b"event: content_block_start" in scan or b"event: message_stop" in scan:
            return held
        tail = scan[-64:]
    return held


def _retry_after(headers: list[tuple[str, str]]) -> float | None:
    for k, v in headers:
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except ValueError:
                return None
    return None

