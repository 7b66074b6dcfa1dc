"""The proxied Anthropic endpoints: messages, count_tokens, models, and health."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from aiohttp import web

from sidecar import __version__
from sidecar.appkeys import FAST_PATHS, RESPONDERS, ROUTER, RUNTIME, SETTLERS, STAGES, STORAGE
from sidecar.errors import PolicyBlocked, PolicyDenied, SidecarError
from sidecar.pipeline import Answer, Reply, RequestContext, Responder, Settler, Stage
from sidecar.protocol.anthropic import RequestHead, parse_head
from sidecar.proxy.ingress import REFUSALS, REQUEST_ID, Handler
from sidecar.proxy.relay import relay, sidecar_headers
from sidecar.routing.router import Opened
from sidecar.web_errors import error_response

log = logging.getLogger(__name__)
S = TypeVar("S", bound=Stage)


async def root(request: web.Request) -> web.Response:
    """`HEAD /` and `GET /`: Claude Code's preconnect; answers anything, cheaply."""
    return web.Response(text="claude-sidecar\n")


async def healthz(request: web.Request) -> web.Response:
    """Liveness for `start`, service managers and load balancers, with the storage state
    (`storage.ok` is false while usage cannot be recorded; `pending` records wait in memory) and
    how many requests the listener's fast path answered."""
    storage = request.app.get(STORAGE)
    runtime = request.app.get(RUNTIME)
    return web.json_response({
        "ok": True, "version": __version__, "storage": storage.state() if storage else None,
        "fast_path_served": runtime.fast_path_served if runtime else 0,
    })  # fmt: skip


async def messages(request: web.Request) -> web.StreamResponse:
    """`POST /v1/messages` and `/v1/messages/count_tokens`, streaming or not."""
    body = await request.read()
    headers = request.headers
    stages = request.app[STAGES]
    responders: list[Responder] = request.app[RESPONDERS]
    ctx = RequestContext(
        request.path,
        body,
        RequestHead(),
        headers.get("x-claude-code-session-id"),
        headers.get("x-claude-code-agent-id"),
        headers=headers,
        method=request.method,
        path_qs=request.rel_url.raw_path_qs,
    )
    ctx.on_finish = functools.partial(_complete, stages, ctx)
    request[REQUEST_ID] = ctx.id  # an unexpected error's 500 names it
    in_flight = request.app[RUNTIME].in_flight
    in_flight[ctx.id] = ctx
    try:
        try:
            ctx.head = parse_head(body)
            answer = None
            for stage in stages:  # the last one, Dispatch, always answers
                answer = await stage.on_request(ctx)
                if answer is not None:
                    break
            resp = await _answer(ctx, request, answer, responders)
        except SidecarError as e:
            _fail(ctx, e)
            if isinstance(e, PolicyBlocked):
                e.request_id = ctx.id  # the audit entry's id: one the user can quote
            resp = error_response(e)
            resp.headers["x-sidecar-request-id"] = ctx.id
        finally:
            del in_flight[ctx.id]
        await _send(request, resp, ctx)
    finally:
        ctx.finish()  # a response that broke off (a streamed one finished before its last chunk)
        _settle(request.app[SETTLERS], ctx)  # after the final byte: what no answer waits for
    return resp


async def _send(request: web.Request, resp: web.StreamResponse, ctx: RequestContext) -> None:
    if resp.prepared:
        return
    ctx.finish()  # metered, audited and journaled before the answer goes out
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except ConnectionError:
        pass  # the client left; aiohttp closes the connection


async def _answer(
    ctx: RequestContext, request: web.Request, answer: Answer | None, responders: Sequence[Responder] = ()
) -> web.StreamResponse:
    """Send what a stage answered: the upstream's answer (relayed through the filters the
    `responders` want on it), or a stage's own Reply."""
    if isinstance(answer, Opened):
        filters = [f for s in responders if (f := s.on_response(ctx)) is not None]
        return await relay(ctx, request, answer.call, answer.prefix, answer.chunks, filters)
    if isinstance(answer, Reply):
        return _reply(ctx, answer)
    raise TypeError(f"request {ctx.id}: the request path ended without an answer ({answer!r})")


def _reply(ctx: RequestContext, reply: Reply) -> web.Response:
    """A stage's own answer (e.g. a cache hit), with the sidecar's headers."""
    ctx.status = reply.status
    ctx.response_bytes = len(reply.body)
    ctx.first_byte_at = time.perf_counter()
    headers = {"content-type": reply.content_type, **reply.headers, **sidecar_headers(ctx)}
    return web.Response(status=reply.status, body=reply.body, headers=headers)


def _fail(ctx: RequestContext, e: SidecarError) -> None:
    ctx.status = e.status
    ctx.outcome = "rejected" if e.status < 500 else "upstream_error"
    ctx.summary.error_type = e.error_type
    ctx.summary.error_message = e.message
    if e.status in REFUSALS or isinstance(e, PolicyDenied):
        log.warning("refused request %s (%s): %d %s: %s", ctx.id, ctx.head.model, e.status, e.error_type, e.message)


def _complete(stages: list[Stage], ctx: RequestContext) -> None:
    _each(stages, "complete", ctx, lambda stage: stage.on_complete(ctx))


def _settle(settlers: list[Settler], ctx: RequestContext) -> None:
    _each(settlers, "settle", ctx, lambda stage: stage.on_answered(ctx))


def _each(stages: Sequence[S], what: str, ctx: RequestContext, hook: Callable[[S], None]) -> None:
    """Run `hook` on each stage in order; a stage that fails is logged and the rest still run."""
    for stage in stages:
        try:
            hook(stage)
        except Exception:
            log.exception("stage %s failed to %s request %s", type(stage).__name__, what, ctx.id)


async def models(request: web.Request) -> web.StreamResponse:
    """`GET /v1/models`: the default provider's own list, passed through, when no routes are
    configured; otherwise the names the routes serve, after the Anthropic provider's list."""
    ctx = RequestContext(
        request.path, b"", RequestHead(), None, None, headers=request.headers, method=request.method,
        path_qs=request.rel_url.raw_path_qs,
    )  # fmt: skip
    router = request.app[ROUTER]
    if not router.routes:
        return await _answer(ctx, request, await router.open(ctx))
    listed = await router.list_models(ctx)
    ctx.status = 200
    return web.json_response(
        {
            "data": listed,
            "has_more": False,
            "first_id": listed[0]["id"] if listed else None,
            "last_id": listed[-1]["id"] if listed else None,
        }
    )


def add_routes(app: web.Application) -> None:
    """Register the proxied endpoints on `app`."""
    app.router.add_route("HEAD", "/", root)
    app.router.add_get("/", root, allow_head=False)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", messages)
    app.router.add_get("/v1/models", models)
    fast: dict[str, Handler] = {"/v1/messages": messages, "/v1/messages/count_tokens": messages}
    app[FAST_PATHS] = fast  # plain requests to these skip the router (sidecar.proxy.lane)
