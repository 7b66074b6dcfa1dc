"""The one-scan check for foreign thinking signatures says what the four substring searches said."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.protocol import foreign

MARKERS = (b'"signature":""', b'"signature": ""', b'"signature":"gemini:', b'"signature": "gemini:')
PIECES = [b'"signature":', b'"signature"', b" ", b'""', b'"', b"gemini:", b"gemini", b'"gemini:', b"x", b":", b"{", b"}", b",", b"\xc3\xa9"]


def four_scans(body: bytes) -> bool:
    return any(m in body for m in MARKERS)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.binary(max_size=4), max_size=24).map(b"".join))
def test_one_scan_finds_what_four_scans_find(body: bytes) -> None:
    assert foreign.marked(body) is four_scans(body)


def test_markers_at_the_edges() -> None:
    for m in MARKERS:
        for body in (m, b"x" * 100 + m, m + b"x", b'"signature":"abc" ' + m, m[:-1]):
            assert foreign.marked(body) is four_scans(body), body
    assert foreign.marked(b"") is False


# --- the head's verdict: parse_head reads each block's type and signature in the same pass
# that validates the body; a body it calls foreign-free must be one scrub leaves alone.

signatures = st.one_of(
    st.none(), st.just(""), st.just("gemini:abc"), st.text(max_size=6), st.integers(), st.just("sig-anthropic")
)
blocks = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["thinking", "text", "redacted_thinking"])}, optional={"signature": signatures, "thinking": st.text(max_size=4)}),
    st.fixed_dictionaries({"type": st.just("tool_result"), "content": st.lists(st.fixed_dictionaries({"type": st.just("thinking"), "signature": st.just("")}), max_size=2)}),
    st.text(max_size=3),
    st.integers(),
)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.one_of(st.text(max_size=5), st.lists(blocks, max_size=4), st.none(), st.integers())}),
    max_size=4,
)


@settings(max_examples=800, deadline=None)
@given(messages=st.one_of(messages, st.integers(), st.none()), spaced=st.booleans())
def test_a_body_the_head_calls_foreign_free_is_one_scrub_leaves_alone(messages: object, spaced: bool) -> None:
    import json

    from sidecar.protocol.anthropic import parse_head

    body = json.dumps({"model": "m", "max_tokens": 5, "messages": messages}, separators=None if spaced else (",", ":")).encode()
    head = parse_head(body)
    if head.foreign_free():
        assert foreign.scrub(body) is None
    if foreign.scrub(body) is not None:
        assert not head.foreign_free()


def test_the_head_reads_a_foreign_block_and_a_clean_conversation() -> None:
    from sidecar.protocol.anthropic import parse_head

    clean = b'{"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"x","signature":"EqQB"}]}]}'
    assert parse_head(clean).foreign_free() is True
    for sig in (b'""', b'"gemini:xyz"'):
        body = clean.replace(b'"EqQB"', sig)
        assert parse_head(body).foreign_free() is False
        assert foreign.scrub(body) is not None
    assert parse_head(clean.replace(b'"EqQB"', b"null")).foreign_free() is False  # searched, as before
    odd = clean.replace(b'"EqQB"', b"5")  # not Anthropic's shape: the body is searched instead
    assert parse_head(odd).foreign_free() is False
