"""A fake Gemini API (generativelanguage.googleapis.com) on loopback, speaking its wire format.

    async with FakeGemini(api_key="k") as fake:
        fake.script(Reply((call("Bash", {"command": "ls"}),)), Reply((text("done"),)))
        ...  # base_url = fake.url; inspect fake.requests

Endpoints: `POST /{version}/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`
(every chunk a whole GenerateContentResponse as a `data:` event; text and thought parts
arrive a few words at a time, function calls whole), `:countTokens`, and
`GET /{version}/models`. The key is read from `x-goog-api-key` (or `?key=`): none is a
403, a wrong one the 400 "API key not valid". Every body is checked by
`gemini_validate` and refused with 400 INVALID_ARGUMENT where the real API would refuse it.

Like Gemini 3, the fake signs the first function call of each answer (`thoughtSignature`),
remembers every signature it issued and on which kind of part, and with
`require_signatures` refuses a history whose first function call of a model turn carries
none, or that carries a signature it never issued or on another kind of part.

Quirks (per reply, `Quirks`): arbitrary byte splits (inside UTF-8 characters too), CRLF
framing, the finish in its own empty chunk, a text signature in a trailing empty part, a
stream that ends cleanly without a finishReason, a connection reset after N chunks, an
in-stream error object.
"""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import msgspec
from aiohttp import web

from sidecar.testing.anthropic_sse import estimate_tokens
from sidecar.testing.fake_server import FakeServer
from sidecar.testing.gemini_validate import (
    SKIP_SIGNATURE,
    GeminiRequestError,
    signed_function_calls,
    validate,
    validate_count,
)

DEFAULT_TEXT = "Hello from the fake Gemini."
MODELS = ("gemini-3-pro-preview", "gemini-3-flash-preview", "gemini-2.5-pro", "gemini-2.5-flash")
STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip
MESSAGES = {
    400: "Request contains an invalid argument.",
    403: "The caller does not have permission",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}


# ---------------------------------------------------------------- parts and replies


def text(s: str, signature: str | None = None) -> dict[str, Any]:
    """A text part."""
    return _signed({"text": s}, signature)


def thought(s: str, signature: str | None = None) -> dict[str, Any]:
    """A thought-summary part (`thought: true`)."""
    return _signed({"text": s, "thought": True}, signature)


def call(name: str, args: dict[str, Any], signature: str | None = None, id: str | None = None) -> dict[str, Any]:
    """A function-call part (`id` only as newer API versions send it)."""
    fc: dict[str, Any] = {"name": name, "args": args}
    if id is not None:
        fc["id"] = id
    return _signed({"functionCall": fc}, signature)


def _signed(part: dict[str, Any], signature: str | None) -> dict[str, Any]:
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def new_signature() -> str:
    """A signature like Gemini's: opaque base64."""
    return base64.b64encode(os.urandom(48)).decode()


@dataclass(frozen=True)
class Quirks:
    """Ways a stream may arrive that a client must survive."""

    split_bytes: int | None = None  # re-chunk the body every N bytes (UTF-8 split included)
    crlf: bool = False  # CRLF line endings
    finish_in_own_chunk: bool = False  # the finishReason comes in a last chunk with an empty text
    signature_in_trailing_part: bool = False  # a text's signature comes in a later empty text part
    no_finish: bool = False  # end cleanly, with no finishReason anywhere
    cut_after_chunks: int | None = None  # reset the connection after this many chunks
    error_after_chunks: int | None = None  # an {"error": ...} object after this many chunks


@dataclass(frozen=True)
class Reply:
    """An answer: its parts (as a non-streaming answer has them), finish and usage."""

    parts: tuple[dict[str, Any], ...] = field(default_factory=lambda: (text(DEFAULT_TEXT),))
    finish_reason: str | None = "STOP"
    finish_message: str | None = None
    usage: dict[str, int] = field(default_factory=dict)  # usageMetadata fields to set
    block_reason: str | None = None  # promptFeedback.blockReason: the prompt was blocked
    sign_first_call: bool = True  # Gemini 3 signs the first function call of an answer
    words_per_chunk: int = 2
    quirks: Quirks = field(default_factory=Quirks)


@dataclass(frozen=True)
class GeminiError:
    """An HTTP error with Google's envelope; `retry_delay` adds a RetryInfo detail."""

    status: int = 503
    message: str | None = None
    retry_delay: str | None = None  # e.g. "7s"


Behaviour: TypeAlias = Reply | GeminiError


# ---------------------------------------------------------------- the server


class FakeGemini(FakeServer["Behaviour"]):
    """A fake Gemini API: pops a scripted behaviour per generateContent call."""

    def __init__(
        self,
        *,
        api_key: str | None = "test-gemini-key",
        require_signatures: bool = True,
        known_models: tuple[str, ...] | None = None,
        default: Behaviour | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.api_key = api_key
        self.require_signatures = require_signatures
        self.known_models = known_models
        super().__init__(default or Reply(), host=host)
        self.issued: dict[str, tuple[str, str]] = {}  # signature -> (part kind, function name)
        self.app.router.add_post("/{version}/models/{target}", self._model_call)
        self.app.router.add_get("/{version}/models", self._list_models)

    def bodies(self) -> list[Any]:
        """The JSON bodies of the generate calls received, in order."""
        return [r.json() for r in self.requests if r.path.endswith((":generateContent", ":streamGenerateContent"))]

    # ------------------------------------------------------------ handlers

    async def _model_call(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.record(request, body)
        model, _, action = request.match_info["target"].rpartition(":")
        refused = self._auth(request) or self._model(model, request.match_info["version"], action)
        if refused is not None:
            return refused
        try:
            payload = msgspec.json.decode(body)
        except msgspec.DecodeError as e:
            return error_response(400, f"Invalid JSON payload received. {e}")
        try:
            if action == "countTokens":
                validate_count(payload)
            else:
                validate(payload)
                self._check_signatures(payload["contents"])
        except GeminiRequestError as e:
            return error_response(400, str(e))
        if action == "countTokens":
            return web.json_response({"totalTokens": estimate_tokens(body), "promptTokensDetails": [{"modality": "TEXT", "tokenCount": estimate_tokens(body)}]})
        behaviour = self.next_behaviour()
        if isinstance(behaviour, GeminiError):
            return error_response(behaviour.status, behaviour.message, behaviour.retry_delay)
        parts = self._sign(behaviour)
        usage = usage_metadata(behaviour, parts, estimate_tokens(body))
        if action == "streamGenerateContent":
            if request.query.get("alt") != "sse":
                return error_response(400, "this fake streams only with alt=sse")
            return await self._stream(request, behaviour, parts, usage, model)
        return web.json_response(whole_answer(behaviour, parts, usage, model))

    def _auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return error_response(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if key != self.api_key:
            return error_response(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")
        return None

    def _model(self, model: str, version: str, action: str) -> web.Response | None:
        if action not in ("generateContent", "streamGenerateContent", "countTokens"):
            return error_response(404, f"Method {action!r} is not found.")
        if version not in ("v1", "v1beta", "v1alpha"):
            return error_response(404, f"API version {version!r} is not found.")
        if self.known_models is not None and model not in self.known_models:
            return error_response(
                404,
                f"models/{model} is not found for API version {version}, or is not supported for {action}. "
                "Call ListModels to see the list of available models and their supported methods.",
            )
        return None

    def _check_signatures(self, contents: list[dict[str, Any]]) -> None:
        for c in contents:
            for p in c["parts"] if c["role"] == "model" else ():
                sig = p.get("thoughtSignature")
                if sig is None or sig == SKIP_SIGNATURE:
                    continue
                kind = _kind(p)
                if self.issued.get(sig) != kind:
                    raise GeminiRequestError("Corrupted thought signature.")
        if not self.require_signatures:
            return
        for i, j, sig in signed_function_calls(contents):
            if sig is None:
                name = contents[i]["parts"][j]["functionCall"]["name"]
                raise GeminiRequestError(
                    "Function call is missing a thought_signature in functionCall parts. This is required for tools to "
                    "work correctly, and missing thought_signature may lead to degraded model performance. Additional "
                    f"data, function call `default_api:{name}` , position {j + 1}. Please refer to "
                    "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
                )

    def _sign(self, reply: Reply) -> list[dict[str, Any]]:
        """The reply's parts with the signatures it will carry, each one remembered."""
        parts = [dict(p) for p in reply.parts]
        first = next((p for p in parts if "functionCall" in p), None)
        if reply.sign_first_call and first is not None and "thoughtSignature" not in first:
            first["thoughtSignature"] = new_signature()
        for p in parts:
            if "thoughtSignature" in p:
                self.issued[p["thoughtSignature"]] = _kind(p)
        return parts

    async def _stream(self, request: web.Request, reply: Reply, parts: list[dict[str, Any]], usage: dict[str, int], model: str) -> web.StreamResponse:
        q = reply.quirks
        chunks = stream_chunks(reply, parts, usage, model)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        end = b"\r\n\r\n" if q.crlf else b"\n\n"
        frames = [b"data: " + msgspec.json.encode(c) + end for c in chunks]
        if q.error_after_chunks is not None:
            err = {"error": {"code": 503, "message": MESSAGES[503], "status": "UNAVAILABLE"}}
            frames = [*frames[: q.error_after_chunks], b"data: " + msgspec.json.encode(err) + end]
        if q.cut_after_chunks is not None:
            frames = frames[: q.cut_after_chunks]
        data = b"".join(frames)
        pieces = [data[i : i + q.split_bytes] for i in range(0, len(data), q.split_bytes)] if q.split_bytes else frames
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(0)
        if q.cut_after_chunks is not None:
            await asyncio.sleep(0.02)  # let the client read what was sent, then reset
            if request.transport is not None:
                request.transport.abort()
            return resp
        await resp.write_eof()
        return resp

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        refused = self._auth(request)
        if refused is not None:
            return refused
        models = [
            {"name": f"models/{m}", "displayName": m.replace("-", " ").title(), "supportedGenerationMethods": ["generateContent", "countTokens"]}
            for m in (self.known_models or MODELS)
        ]
        models.append({"name": "models/text-embedding-004", "displayName": "Text Embedding 004", "supportedGenerationMethods": ["embedContent"]})
        return web.json_response({"models": models})


def _kind(p: dict[str, Any]) -> tuple[str, str]:
    if "functionCall" in p:
        return "call", str(p["functionCall"].get("name"))
    return ("thought" if p.get("thought") else "text"), ""


# ---------------------------------------------------------------- config and wire format


def gemini_config(url: str, model: str | None = "gemini-3-pro-preview", key_env: str = "TEST_GEMINI_KEY", extra: str = "") -> str:
    """Sidecar config text with one Gemini provider at `url`; with `model`, a route sends every
    request there (no retries and no breaker, so each scripted behaviour answers one request)."""
    text = f'[[providers]]\nname = "gemini"\ntype = "gemini"\nbase_url = "{url}"\nkeys = ["env:{key_env}"]\n{extra}\n'
    if model:
        text += (
            f'[routing.retry]\nrounds = 0\n[routing.breaker]\nfailures = 1000000\nmin_requests = 1000000\n\n[[routes]]\nname = "to-gemini"\nmatch = {{ model = "*" }}\n'
            f'targets = [{{ provider = "gemini", model = "{model}" }}]\n'
        )
    return text



def error_response(status: int, message: str | None = None, retry_delay: str | None = None, reason: str | None = None) -> web.Response:
    """Google's error envelope."""
    err: dict[str, Any] = {"code": status, "message": message or MESSAGES.get(status, "Error"), "status": STATUS_NAMES.get(status, "UNKNOWN")}
    details: list[dict[str, Any]] = []
    if reason:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"})
    if retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    if details:
        err["details"] = details
    return web.json_response({"error": err}, status=status)


def _words(s: str) -> int:
    return max(1, len(s.split())) if s else 0


def usage_metadata(reply: Reply, parts: list[dict[str, Any]], prompt: int) -> dict[str, int]:
    """usageMetadata for a reply: counts from its parts, then the scripted overrides."""
    thoughts = sum(_words(p.get("text", "")) for p in parts if p.get("thought"))
    candidates = sum(_words(p.get("text", "")) for p in parts if "text" in p and not p.get("thought"))
    candidates += sum(max(1, len(msgspec.json.encode(p["functionCall"])) // 4) for p in parts if "functionCall" in p)
    u = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    if thoughts:
        u["thoughtsTokenCount"] = thoughts
    u.update(reply.usage)
    u["promptTokenCount"] = max(u["promptTokenCount"], u.get("cachedContentTokenCount", 0))
    u["totalTokenCount"] = u["promptTokenCount"] + u["candidatesTokenCount"] + u.get("thoughtsTokenCount", 0)
    return u


def whole_answer(reply: Reply, parts: list[dict[str, Any]], usage: dict[str, int], model: str) -> dict[str, Any]:
    """The non-streaming GenerateContentResponse."""
    base = {"usageMetadata": usage, "modelVersion": model, "responseId": new_signature()[:22]}
    if reply.block_reason:
        return {"promptFeedback": {"blockReason": reply.block_reason}, **base, "usageMetadata": _prompt_only(usage)}
    cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if reply.finish_reason:
        cand["finishReason"] = reply.finish_reason
    if reply.finish_message:
        cand["finishMessage"] = reply.finish_message
    return {"candidates": [cand], **base}


def _prompt_only(usage: dict[str, int]) -> dict[str, int]:
    return {"promptTokenCount": usage["promptTokenCount"], "totalTokenCount": usage["promptTokenCount"]}


def stream_chunks(reply: Reply, parts: list[dict[str, Any]], usage: dict[str, int], model: str) -> list[dict[str, Any]]:
    """The chunks of streamGenerateContent: text a few words at a time, calls whole."""
    rid = new_signature()[:22]
    if reply.block_reason:
        return [{"promptFeedback": {"blockReason": reply.block_reason}, "usageMetadata": _prompt_only(usage), "modelVersion": model, "responseId": rid}]
    groups: list[list[dict[str, Any]]] = []
    for p in parts:
        if "text" in p:
            groups.extend([[piece] for piece in _pieces(p, reply.words_per_chunk)])
            if reply.quirks.signature_in_trailing_part and "thoughtSignature" in groups[-1][0] and not p.get("thought"):
                groups.append([{"text": "", "thoughtSignature": groups[-1][0].pop("thoughtSignature")}])
        elif "functionCall" in p and groups and "functionCall" in groups[-1][-1]:
            groups[-1].append(p)  # parallel calls arrive together
        else:
            groups.append([p])
    if reply.quirks.finish_in_own_chunk or not groups:
        groups.append([{"text": ""}])
    chunks = []
    for n, group in enumerate(groups):
        last = n == len(groups) - 1
        cand: dict[str, Any] = {"content": {"parts": group, "role": "model"}, "index": 0}
        if last and reply.finish_reason and not reply.quirks.no_finish:
            cand["finishReason"] = reply.finish_reason
            if reply.finish_message:
                cand["finishMessage"] = reply.finish_message
        chunk_usage = usage if last else _prompt_only(usage)
        chunks.append({"candidates": [cand], "usageMetadata": chunk_usage, "modelVersion": model, "responseId": rid})
    return chunks


def _pieces(part: dict[str, Any], words_per_chunk: int) -> list[dict[str, Any]]:
    words = part["text"].split(" ")
    texts = [" ".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)]
    texts = [t + " " for t in texts[:-1]] + texts[-1:]
    out = [{k: v for k, v in part.items() if k != "thoughtSignature"} | {"text": t} for t in texts]
    if "thoughtSignature" in part:
        out[-1]["thoughtSignature"] = part["thoughtSignature"]
    return out
