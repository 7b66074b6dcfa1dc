"""The cache keys of a Messages request: scope, prefix, exact, and the semantic bucket.

- **scope**: everything that shapes an answer except the conversation: the endpoint, the
  client's credential (hashed: a cache never answers one API key with another's entries),
  `anthropic-version`, the `anthropic-beta` flags (as a set), and every body field but
  `messages` (the model, which selects the route; system with its volatile parts
  normalised, tools, tool_choice, max_tokens, temperature, top_p, top_k, stop_sequences,
  thinking, output_config, ... including fields this version does not know).
  `cache_control` markers, `metadata` (Claude Code puts a session id there) and `stream`
  (one stored answer serves both kinds of client) are left out.
- **prefix**: the scope plus every message but the last.
- **exact**: the prefix plus the last message.
- **bucket**: the prefix plus the last message with the user's own text blanked out. Only
  requests with the same bucket may be compared semantically, so the whole history, the
  tools and the client's `<system-reminder>` blocks always match exactly.

Keys are SHA-256 hex digests of canonical JSON (sorted keys, compact).
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from sidecar.cache.normalise import Normaliser, is_system_reminder
from sidecar.protocol.anthropic import body_error

KEY_VERSION = 1  # bump when the canonical form changes, so old entries stop matching
_EXCLUDED_FIELDS = ("messages", "metadata", "stream")
_QUERY_MARK = "\x00query"
_KEY_HEADERS = ("anthropic-version", "anthropic-beta", "x-api-key", "authorization")  # what the scope reads

_encode = msgspec.json.Encoder(order="sorted").encode


class Uncacheable(Exception):
    """The request has no shape the cache can key (the upstream will judge it)."""


@dataclass(frozen=True)
class CacheKeys:
    """The keys of one request, and the user's final text when it may be matched semantically."""

    scope: str
    prefix: str
    exact: str
    bucket: str | None  # None: the last turn is not plain user text
    query: str | None  # the user's own text of the last message
    volatile: tuple[str, ...]  # the values the normalisation replaced (e.g. today's date)


def build_keys(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    endpoint: str,
    normaliser: Normaliser,
) -> CacheKeys:
    """Compute the keys of a Messages request `body`, or raise Uncacheable."""
    messages = _messages(body.get("messages"))
    seen: list[str] = []
    scope = _scope(body, headers, endpoint, normaliser.bind(seen))
    return _conversation_keys(scope, messages, normaliser.bind(seen), seen)


def _messages(value: Any) -> list[dict[str, Any]]:
    """`value` when it is a non-empty list of message objects, else Uncacheable."""
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        raise Uncacheable("the request has no list of messages")
    return value


def _scope(body: Mapping[str, Any], headers: Mapping[str, str], endpoint: str, norm: Callable[[str], str]) -> str:
    scope_obj = {
        "v": KEY_VERSION,
        "endpoint": endpoint,
        "tenant": _tenant(headers),
        "version": headers.get("anthropic-version", ""),
        "beta": sorted({b.strip() for b in headers.get("anthropic-beta", "").split(",") if b.strip()}),
        "body": _scope_body(body, norm),
    }
    return _digest(b"scope", _encode(scope_obj))


def _conversation_keys(scope: str, messages: list[dict[str, Any]], norm: Callable[[str], str], seen: list[str]) -> CacheKeys:
    canon = [_message(m, norm) for m in messages]
    prefix = _digest(scope.encode(), _encode(canon[:-1]))
    exact = _digest(prefix.encode(), _encode(canon[-1]))
    query, blanked = _split_query(canon[-1])
    bucket = None if blanked is None else _digest(prefix.encode(), b"bucket", _encode(blanked))
    return CacheKeys(scope, prefix, exact, bucket, query, tuple(seen))


class KeyMemo:
    """The keys of recently seen request bodies, found by their raw bytes.

    A repeat sends the same bytes, so its keys are found without decoding and
    canonicalising the body again (about 1 ms for Claude Code's 76 KB main-turn bodies).
    An entry is found by a probe (the body's length, first and last SAMPLE bytes, the
    headers the keys read and the endpoint) and then the body is compared with the one the
    entry keeps, byte for byte: a memcmp costs a twentieth of a SHA-256 of the body, and no
    two different bodies can ever share keys (no digest to collide). The memo is bounded in
    bytes (bodies and the user's final text, `query`, which can be as large as the body) as
    well as in entries: an entry holding more than MAX_ENTRY_BYTES is not kept (a rare huge
    prompt is keyed again when repeated), and the oldest entries go once all of them hold
    more than MAX_BYTES.
    """

    MAX_BYTES = 4 * 1024 * 1024
    MAX_ENTRY_BYTES = 1024 * 1024
    SAMPLE = 512

    def __init__(self, normaliser: Normaliser, size: int = 256) -> None:
        self.normaliser = normaliser
        self.size = size
        self._keys: OrderedDict[tuple[Any, ...], tuple[CacheKeys, bytes, int]] = OrderedDict()
        self._bytes = 0
        # Scopes by the raw bytes of the body's fields but the messages: a new turn of a
        # conversation sends the same system prompt and tools (most of a Claude Code body).
        self._scopes: OrderedDict[tuple[Any, ...], tuple[bytes, str, tuple[str, ...]]] = OrderedDict()

    def keys(
        self,
        raw: bytes,
        body: Callable[[], Mapping[str, Any]],
        headers: Mapping[str, str],
        endpoint: str,
        fields: Mapping[str, msgspec.Raw] | None = None,
    ) -> CacheKeys:
        """The keys of the request with body bytes `raw` (`body` decodes it when needed;
        `fields` are its top-level fields undecoded, when the caller has them: e.g. the
        request head's scan, sidecar.protocol.anthropic.parse_head)."""
        n = self.SAMPLE
        probe = (len(raw), raw[:n], raw[-n:], endpoint, *[headers.get(name, "") for name in _KEY_HEADERS])
        found = self._keys.get(probe)
        if found is not None:
            if found[1] == raw:
                self._keys.move_to_end(probe)
                return found[0]
            self._bytes -= found[2]  # another body with the same probe: it takes the place
            del self._keys[probe]
        try:
            top = _fields(raw) if fields is None else fields
        except (msgspec.DecodeError, RecursionError):
            keys = build_keys(body(), headers, endpoint, self.normaliser)  # which refuses it clearly
        else:
            try:
                keys = self._from_fields(top, headers, endpoint)
            except (msgspec.DecodeError, RecursionError) as e:  # bytes the scan skipped unread (e.g. not UTF-8)
                raise body_error(e) from None
        held = _held_bytes(keys) + sys.getsizeof(raw)
        if held <= self.MAX_ENTRY_BYTES:
            self._keys[probe] = (keys, raw, held)
            self._bytes += held
            while len(self._keys) > self.size or self._bytes > self.MAX_BYTES:
                _, (_, _, freed) = self._keys.popitem(last=False)
                self._bytes -= freed
        return keys

    SCOPES = 32
    MAX_SCOPE_BYTES = 1024 * 1024

    def _from_fields(self, top: Mapping[str, msgspec.Raw], headers: Mapping[str, str], endpoint: str) -> CacheKeys:
        """`build_keys` for a body not seen whole before, from its top-level fields. Its scope is
        found by the raw bytes of every field but the messages when an earlier body had the
        same (with the same headers the scope reads), so only the messages are decoded and
        canonicalised."""
        listed = top.get("messages")
        messages = _messages(msgspec.json.decode(listed) if listed is not None else None)
        # Every field but the messages, each as its length and bytes: no two bodies share a
        # signature unless those fields are byte for byte the same, in the same order.
        parts: list[bytes] = []
        for k, v in top.items():
            if k not in _EXCLUDED_FIELDS:
                name, value = k.encode("utf-8", "surrogatepass"), bytes(v)
                parts += (len(name).to_bytes(8, "big"), name, len(value).to_bytes(8, "big"), value)
        sig = b"".join(parts)
        n = self.SAMPLE
        probe = (len(sig), sig[:n], sig[-n:], endpoint, *[headers.get(name, "") for name in _KEY_HEADERS])
        found = self._scopes.get(probe)
        if found is not None and found[0] == sig:
            self._scopes.move_to_end(probe)
            scope, seen = found[1], list(found[2])
        else:
            seen = []
            fields = {k: msgspec.json.decode(v) for k, v in top.items() if k not in _EXCLUDED_FIELDS}
            scope = _scope(fields, headers, endpoint, self.normaliser.bind(seen))
            if len(sig) <= self.MAX_SCOPE_BYTES:
                self._scopes[probe] = (sig, scope, tuple(seen))
                while len(self._scopes) > self.SCOPES:
                    self._scopes.popitem(last=False)
        return _conversation_keys(scope, messages, self.normaliser.bind(seen), seen)


_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode  # a JSON object's fields, undecoded


def _held_bytes(keys: CacheKeys) -> int:
    """About the memory one memo entry keeps alive: its strings."""
    texts = (keys.scope, keys.prefix, keys.exact, keys.bucket, keys.query, *keys.volatile)
    return sum(sys.getsizeof(t) for t in texts if t is not None)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.hexdigest()


def _tenant(headers: Mapping[str, str]) -> str:
    """A digest of the credential the client presented (never the credential itself)."""
    cred = headers.get("x-api-key", "") + "\n" + headers.get("authorization", "")
    return hashlib.sha256(cred.encode()).hexdigest()


def _number(v: Any) -> Any:
    # 1 and 1.0 are the same temperature.
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _scope_body(body: Mapping[str, Any], norm: Callable[[str], str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in body.items():
        if k in _EXCLUDED_FIELDS:
            continue
        if k == "system":
            v = _system(v, norm)
        elif k == "tools" and isinstance(v, list):
            v = [_strip(t) for t in v]
        out[k] = _number(v)
    return out


def _strip(block: Any) -> Any:
    """A content block without its cache_control marker (tool_result contents too)."""
    if not isinstance(block, dict):
        return block
    out = {k: v for k, v in block.items() if k != "cache_control"}
    if out.get("type") == "tool_result" and isinstance(out.get("content"), list):
        out["content"] = [_strip(b) for b in out["content"]]
    return out


def _blocks(content: Any) -> Any:
    # A string content is the same as one text block.
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [_strip(b) for b in content]
    return content


def _normalise_blocks(blocks: Any, norm: Callable[[str], str], only_reminders: bool) -> Any:
    if not isinstance(blocks, list):
        return blocks
    out = []
    for b in blocks:
        text = b.get("text") if isinstance(b, dict) and b.get("type") == "text" else None
        if isinstance(text, str) and (not only_reminders or is_system_reminder(text)):
            b = {**b, "text": norm(text)}
        out.append(b)
    return out


def _system(system: Any, norm: Callable[[str], str]) -> Any:
    return _normalise_blocks(_blocks(system), norm, only_reminders=False)


def _message(msg: Mapping[str, Any], norm: Callable[[str], str]) -> dict[str, Any]:
    out = dict(msg)
    role = msg.get("role")
    blocks = _blocks(msg.get("content"))
    if role == "system":
        blocks = _normalise_blocks(blocks, norm, only_reminders=False)
    elif role == "user":
        blocks = _normalise_blocks(blocks, norm, only_reminders=True)
    out["content"] = blocks
    return out


def _split_query(last: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The user's own text of the last message, and the message with that text blanked.

    Only a user message made of text blocks qualifies; `<system-reminder>` blocks are the
    client's context and stay in the bucket key.
    """
    blocks = last.get("content")
    if last.get("role") != "user" or not isinstance(blocks, list) or not blocks:
        return None, None
    texts: list[str] = []
    blanked: list[dict[str, Any]] = []
    for b in blocks:
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            return None, None
        if is_system_reminder(b["text"]):
            blanked.append(b)
        else:
            texts.append(b["text"])
            blanked.append({**b, "text": _QUERY_MARK})
    query = "\n\n".join(t.strip() for t in texts).strip()
    if not query:
        return None, None
    return query, {**last, "content": blanked}
