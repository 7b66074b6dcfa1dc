"""parse_head reads the body's top level in one scan (the cache's keys reuse it): it accepts,
refuses and reads exactly what the single-struct decoder it replaced did."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import InvalidRequest
from sidecar.protocol.anthropic import RequestHead, _Message, body_error, parse_head


class _Whole(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
    max_tokens: int | None = None
    messages: list[_Message] | None = None


class _Loose(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
    max_tokens: int | None = None


def reference(body: bytes) -> RequestHead:
    """The decoder parse_head had before: one struct, and a looser one when the messages
    have another shape."""
    if not body:
        raise InvalidRequest("the request body is empty; expected a JSON object")
    try:
        try:
            w = msgspec.json.decode(body, type=_Whole)
            return RequestHead(w.model, w.stream, w.max_tokens, w.messages)
        except msgspec.ValidationError:
            loose = msgspec.json.decode(body, type=_Loose)
            return RequestHead(loose.model, loose.stream, loose.max_tokens)
    except (msgspec.DecodeError, RecursionError) as e:
        raise body_error(e) from None


def strict_json(body: bytes) -> bool:
    def refuse(constant: str) -> None:
        raise ValueError(constant)

    try:
        json.loads(body, parse_constant=refuse)
    except ValueError:
        return False
    return True


def outcome(fn: Any, body: bytes) -> tuple[Any, ...]:
    """What a head reader made of `body`: for a refusal, its message when the body is valid
    JSON (the struct decoder could refuse a field's type before it reached a bad byte
    further on; the one scan refuses such a body as not JSON: a 400 either way)."""
    try:
        h = fn(body)
    except InvalidRequest as e:
        return ("refused", e.message if strict_json(body) else None)
    return ("read", h.model, h.stream, h.max_tokens, h.messages, h.foreign_free())


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False), st.text(max_size=6)
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
blocks = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["thinking", "text"])}, optional={"signature": st.one_of(st.none(), st.just(""), st.just("gemini:x"), st.text(max_size=4), st.integers())}),
    values,
)
messages = st.one_of(
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.one_of(st.text(max_size=4), st.lists(blocks, max_size=3), values)}), max_size=3),
    values,
)
heads = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.text(max_size=8), values),
        "stream": st.one_of(st.booleans(), values),
        "max_tokens": st.one_of(st.integers(min_value=0, max_value=2**64), values),
        "messages": messages,
        "tools": values,
        "system": values,
    },
)


@settings(max_examples=1500, deadline=None)
@given(head=heads, spaced=st.booleans())
def test_the_one_scan_head_reads_what_the_struct_decoder_read(head: dict[str, Any], spaced: bool) -> None:
    body = json.dumps(head, separators=None if spaced else (",", ":")).encode()
    assert outcome(parse_head, body) == outcome(reference, body)
    if outcome(parse_head, body)[0] == "read":
        fields = parse_head(body).fields
        assert fields is not None and {k: msgspec.json.decode(v) for k, v in fields.items()} == json.loads(body)


def _not_utf8(encoded: bytes, at: int) -> bytes:
    """`encoded` with a byte that is not UTF-8 put just inside one of its strings."""
    quotes = [i for i, c in enumerate(encoded) if c == ord('"')]
    if not quotes:
        return encoded + b"\xff"
    i = quotes[at % len(quotes)] + 1
    return encoded[:i] + b"\xff" + encoded[i:]


@settings(max_examples=1500, deadline=None)
@given(st.builds(_not_utf8, heads.map(lambda h: json.dumps(h, ensure_ascii=False).encode()), st.integers(0, 40)))
def test_bytes_that_are_not_utf8_are_read_or_refused_as_before(body: bytes) -> None:
    """As before, but for a top-level key that is not UTF-8: the struct decoder skipped a key
    it did not know without reading it; the one scan reads every key, and refuses it."""
    new, old = outcome(parse_head, body), outcome(reference, body)
    if new != old:
        assert new[0] == "refused" and old[0] == "read", body
        with pytest.raises(InvalidRequest, match="not valid JSON: Invalid UTF-8"):
            parse_head(body)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.binary(max_size=40), values.map(lambda v: json.dumps(v).encode()), st.builds(lambda h, cut: h[:cut], heads.map(lambda h: json.dumps(h).encode()), st.integers(0, 60))))
def test_malformed_bodies_are_refused_as_before(body: bytes) -> None:
    assert outcome(parse_head, body) == outcome(reference, body)


def test_a_refused_field_is_named_with_its_path() -> None:
    for body in (b'{"model": 5}', b'{"stream": "yes", "model": "m"}', b'{"max_tokens": 1.5}'):
        try:
            parse_head(body)
        except InvalidRequest as new:
            try:
                reference(body)
            except InvalidRequest as old:
                assert new.message == old.message and "- at `$." in new.message
                continue
        raise AssertionError(body)
