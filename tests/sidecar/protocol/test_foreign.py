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
