"""The canonical JSON the audit chain hashes: the fast spelling is json.dumps's, byte for byte."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.audit import chain
from sidecar.audit.chain import Entry, canonical


def by_the_book(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-4, 9.99e-5, 1e16, 9999999999999998.0, 2.5e-05])
_SCALARS = st.none() | st.booleans() | st.integers() | st.integers(-(10**40), 10**40) | _FLOATS | st.text()
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=10), _JSON, max_size=8))
def test_canonical_is_json_dumps_with_sorted_keys(data: dict[str, Any]) -> None:
    try:
        expected: str | type[BaseException] = by_the_book(data)
    except (ValueError, TypeError) as e:  # not JSON at all (none here, but say so if it happens)
        expected = type(e)
    assert canonical(data) == expected


def test_a_request_entry_takes_the_fast_spelling() -> None:
    """The usual request entry is spelled by msgspec (the speed this is for), same bytes."""
    rec = {"ts": 1733500000.123456, "cost_usd": 0.0312, "latency_ms": 1.5, "status": 200, "stream": False,
           "route": None, "decisions": [{"stage": "cache", "action": "miss", "reason": "no stored answer"}]}  # fmt: skip
    assert chain._fast_ok(rec)
    assert not chain._fast_ok({"cost_usd": 2.5e-05}) and not chain._fast_ok({"x": float("nan")})


def test_existing_hashes_do_not_change() -> None:
    """An entry chained before the fast spelling existed hashes the same (a golden value)."""
    data = {"cost_usd": 2.5e-05, "latency_ms": 1.5, "status": 200, "model": "claude-opus-4-8", "é": "😀",
            "decisions": [{"stage": "cache", "action": "miss", "reason": "no stored answer"}], "n": None, "ok": True}  # fmt: skip
    e = Entry.make(7, 1733500000.123456, "request", "01JABCDEF", data, "f" * 64)
    assert e.hash == "fc330447112420ce464fe9bc9e70c270af7e0c37da0a055dbd9f1b6f61d2f7ef"
    data["cost_usd"] = 0.0312
    e = Entry.make(7, 1733500000.123456, "request", "01JABCDEF", data, "f" * 64)
    assert e.hash == Entry.digest(7, 1733500000.123456, "request", "01JABCDEF", e.data, "f" * 64)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(st.floats(), st.integers(-(2**70), 2**70)),
    st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["request", "policy", "head_mismatch", "01M9652HQBGBSN49VXK7718X4Z"])),
)
def test_the_request_path_spells_ts_kind_and_id_as_json_dumps(ts: float, text: str | None) -> None:
    """The hash's fields are spelled without the json encoder where that gives its bytes."""
    assert chain._number(ts) == json.dumps(ts)
    assert chain._text(text) == json.dumps(text, ensure_ascii=False)
