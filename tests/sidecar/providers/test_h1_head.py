"""The lean client's request heads, checked against h11 (a well-kept HTTP/1.1 library):
whatever our builder writes, h11 reads back as exactly one request with the same target and
fields; whatever h11 refuses, our builder refuses too."""

from __future__ import annotations

import re

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.providers.heads import OWNED, UnsafeHead, build_head, check_fields, safe_target

HOST = "api.example:8443"
# Characters that matter to HTTP framing, mixed into otherwise arbitrary text.
NASTY = "\r\n\x00\t \x01\x0b\x0c\x1f\x7f:;,\"%?#/\\\x80\xff€\u2028\udcff\udc80"
text = st.text(alphabet=st.one_of(st.sampled_from(NASTY), st.characters(codec="utf-8"), st.characters(max_codepoint=0x7F)), max_size=24)
names = st.one_of(st.sampled_from(["x-api-key", "anthropic-version", "x-note", "Host", "content-length", "Transfer-Encoding"]), text)
fields = st.lists(st.tuples(names, text), max_size=5)
CTL_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def h11_verdict(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> list[object] | str:
    """The request as h11 parses our bytes back, or why h11 would refuse to build it."""
    try:
        raw_headers = [(k.encode(), v.encode()) for k, v in headers]
        req = h11.Request(
            method=method.encode(), target=target.encode(),
            headers=[(b"Host", HOST.encode()), *raw_headers, (b"Content-Length", str(len(body)).encode())],
        )  # fmt: skip
        h11.Connection(h11.CLIENT).send(req)
    except (h11.LocalProtocolError, UnicodeEncodeError) as e:
        return f"refused: {e}"
    return [req]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.one_of(st.just("POST"), text), target=st.one_of(st.just("/v1/messages?beta=true"), text), headers=fields)
@example(method="POST", target="/v1/messages?beta=true HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/messages", headers=[])
@example(method="POST", target="/v1/messages", headers=[("x-a", "1\r\nx-b: 2")])
@example(method="POST", target="/v1/messages", headers=[("x-a\r\nx-b", "2")])
@example(method="POST", target="/v1/messages", headers=[("x-a", "\xff\udcff")])
def test_what_we_write_h11_reads_back_exactly(method: str, target: str, headers: list[tuple[str, str]]) -> None:
    body = b'{"x": 1}'
    verdict = h11_verdict(method, target, headers, body)
    try:
        head = build_head(method, target, HOST, headers, len(body))
    except UnsafeHead:
        if isinstance(verdict, str):
            return  # h11 refuses it too
        # We are stricter than h11 only where aiohttp's client is too, and about the fields we own.
        assert any(CTL_IN_VALUE.search(v) for _, v in headers) or any(k.lower() in OWNED for k, _ in headers), headers
        return
    assert not isinstance(verdict, str), f"we wrote what h11 refuses: {verdict}"
    server = h11.Connection(h11.SERVER)
    server.receive_data(head + body)
    got = server.next_event()
    assert isinstance(got, h11.Request)
    assert (got.method, got.target) == (method.encode(), target.encode())
    sent = [(b"Host", HOST.encode()), *((k.encode(), v.encode()) for k, v in headers), (b"Content-Length", str(len(body)).encode())]
    assert list(got.headers.raw_items()) == sent
    assert server.next_event() == h11.Data(data=body)
    assert isinstance(server.next_event(), h11.EndOfMessage)
    assert server.next_event() in (h11.PAUSED, h11.NEED_DATA)
    assert server.trailing_data == (b"", False)  # nothing left over: no second request


@settings(max_examples=800, deadline=None)
@given(target=text)
@example(target="/v1/messages?beta=true HTTP/1.1\r\nHost: x")
@example(target="/v1/messages?q=\udce2\udc82\udcac")
def test_a_quoted_target_is_always_one_valid_target(target: str) -> None:
    quoted = safe_target("/" + target)
    h11.Request(method=b"POST", target=quoted.encode("ascii"), headers=[(b"Host", b"x")])
    assert re.fullmatch(r"[\x21-\x7e]+", quoted)
    assert safe_target(quoted) == quoted  # a valid target passes unchanged


@pytest.mark.parametrize(
    ("target", "quoted"),
    [
        ("/v1/messages?beta=true", "/v1/messages?beta=true"),
        ("/v1/messages?q=%E2%82%AC&a=b|c\"d", "/v1/messages?q=%E2%82%AC&a=b|c\"d"),
        ("/v1/messages?q=€ x", "/v1/messages?q=%E2%82%AC%20x"),
        ("/v1/messages?q=\udcff\r\n", "/v1/messages?q=%FF%0D%0A"),
    ],
)
def test_safe_target_examples(target: str, quoted: str) -> None:
    assert safe_target(target) == quoted


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ([("x-a", "1\r\nx-b: 2")], "control character"),
        ([("x-a", "a\x00b")], "control character"),
        ([("x a", "1")], "not a valid HTTP token"),
        ([("", "1")], "not a valid HTTP token"),
        ([("x-a", " lead")], "leading/trailing"),
        ([("x-a", "\udcff")], "not valid UTF-8"),
        ([("Content-Length", "0")], "set by the sidecar"),
        ([("host", "evil")], "set by the sidecar"),
    ],
)
def test_check_fields_says_what_is_wrong(headers: list[tuple[str, str]], why: str) -> None:
    with pytest.raises(UnsafeHead, match=why):
        check_fields(headers)


def test_check_fields_passes_ordinary_and_non_ascii_values() -> None:
    check_fields([("x-api-key", "sk-ant-1"), ("x-note", "€ café\tok"), ("x-empty", "")])


@settings(max_examples=300, deadline=None)
@given(method=st.one_of(st.just("POST"), text), headers=fields, lengths=st.lists(st.integers(0, 10**9) | st.none(), min_size=1, max_size=4))
def test_a_remembered_head_is_spelled_as_a_fresh_one(method: str, headers: list[tuple[str, str]], lengths: list[int | None]) -> None:
    """The head memo (the same headers on every turn, only Content-Length changes) writes the
    bytes the builder writes from scratch, and refuses on every call what it refuses once."""
    from sidecar.providers import heads

    for n in lengths:
        heads._heads.clear()
        try:
            fresh = build_head(method, "/v1/messages", HOST, headers, n)
        except UnsafeHead:
            with pytest.raises(UnsafeHead):
                build_head(method, "/v1/messages", HOST, headers, n)  # never remembered
            return
        assert build_head(method, "/v1/messages", HOST, list(headers), n) == fresh  # from the memo
    assert len(heads._heads) <= heads.HEAD_MEMO_MAX


def test_the_head_memo_is_bounded() -> None:
    from sidecar.providers import heads

    for i in range(heads.HEAD_MEMO_MAX * 2 + 3):
        build_head("POST", "/v1/messages", HOST, [("x-n", str(i))], 1)
    assert 0 < len(heads._heads) <= heads.HEAD_MEMO_MAX
