"""The upstream headers memo: a client's headers differ from turn to turn only in
Content-Length, so they are filtered once; what comes out equals a fresh filtering."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.providers import anthropic
from sidecar.secrets import ResolvedKey

names = st.sampled_from(["x-api-key", "Authorization", "Connection", "content-length", "Content-Length", "x-a", "X-A", "keep-alive", "Host", "anthropic-beta", "proxy-x", "x-sidecar-y"])
values = st.sampled_from(["1", "keep-alive, x-a", "x-a", "close", "sk-1", "", "ü"])


@settings(max_examples=400, deadline=None)
@given(headers=st.lists(st.tuples(names, values), max_size=8), key=st.sampled_from([None, "k1", "k2"]), lengths=st.lists(st.integers(0, 99), min_size=1, max_size=3))
def test_remembered_upstream_headers_equal_fresh_ones(headers: list[tuple[str, str]], key: str | None, lengths: list[int]) -> None:
    resolved = None if key is None else ResolvedKey(key, "test")
    base = [(k, v) for k, v in headers if k.lower() != "content-length"]
    for n in lengths:
        client = CIMultiDictProxy(CIMultiDict([*base, ("Content-Length", str(n))]))
        fresh = anthropic._upstream_headers(client, resolved)
        got = anthropic.upstream_headers(client, resolved)
        assert got == fresh
        got.append(("x-mutated", "1"))  # a caller's list is its own
        assert anthropic.upstream_headers(client, resolved) == fresh


def test_another_key_or_header_is_not_served_from_the_memo() -> None:
    client = CIMultiDictProxy(CIMultiDict([("x-api-key", "client"), ("anthropic-version", "1")]))
    a = anthropic.upstream_headers(client, ResolvedKey("k-a", "test"))
    b = anthropic.upstream_headers(client, ResolvedKey("k-b", "test"))
    assert ("x-api-key", "k-a") in a and ("x-api-key", "k-b") in b and ("x-api-key", "client") not in a
    other = CIMultiDictProxy(CIMultiDict([("x-api-key", "client"), ("anthropic-version", "2")]))
    assert ("anthropic-version", "2") in anthropic.upstream_headers(other, None)
    for i in range(anthropic.UPSTREAM_MEMO_MAX + 5):
        anthropic.upstream_headers(CIMultiDictProxy(CIMultiDict([("x-n", str(i))])), None)
    assert len(anthropic._upstream) <= anthropic.UPSTREAM_MEMO_MAX
