"""The incremental JSON-prefix check used for streamed tool arguments."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.protocol.openai.jsonprefix import JsonPrefix

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(_json, st.booleans())
def test_every_prefix_of_valid_json_is_accepted(value: Any, compact: bool) -> None:
    doc = json.dumps(value, separators=(",", ":") if compact else None, ensure_ascii=compact)
    scan = JsonPrefix()
    for i, ch in enumerate(doc):
        assert scan.feed(ch) == 1, (doc, i)
    assert scan.closing() == ""


@settings(max_examples=150, deadline=None)
@given(_json, st.data())
def test_a_closable_prefix_closes_to_valid_json(value: Any, data: st.DataObject) -> None:
    doc = json.dumps(value)
    prefix = doc[: data.draw(st.integers(0, len(doc)))]
    scan = JsonPrefix()
    assert scan.feed(prefix) == len(prefix)
    tail = scan.closing()
    if tail is not None and prefix and prefix.rstrip()[-1:] not in ("-", ".", "e", "E", "+"):
        json.loads(prefix + tail)


@pytest.mark.parametrize(
    ("text", "good"),
    [
        ("{'a': 1}", 1),
        ('{"a": 1,}', 8),
        ('{"a": [1, 2,]}', 12),
        ('{"a" 1}', 5),
        ('{"a": 1} {', 9),
        ('{"a": "\\x"}', 8),
        ('{"a": "\\u12G4"}', 11),
        ('{"a": tru}', 9),
        ('{"a": 1]', 7),
    ],
)
def test_the_first_character_that_breaks_json_is_found(text: str, good: int) -> None:
    scan = JsonPrefix()
    assert scan.feed(text) == good
    assert not scan.valid
    assert scan.feed("}") == 0
    assert scan.closing() is None


@pytest.mark.parametrize(
    ("text", "closing"),
    [('{"a": "b', '"}'), ('{"a": [1, {"b": tr', "ue}]}"), ("[", "]"), ("{", "}"), ('{"a": ', None), ('{"a', None), ('{"a": 1,', None)],
)
def test_closing(text: str, closing: str | None) -> None:
    scan = JsonPrefix()
    assert scan.feed(text) == len(text)
    assert scan.closing() == closing
