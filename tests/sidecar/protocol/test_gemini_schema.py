"""Tool schemas cleaned down to Gemini's OpenAPI subset (and checked against what Gemini accepts)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.protocol.gemini_schema import Inexpressible, response_schema, to_gemini
from sidecar.testing.gemini_validate import GeminiRequestError, schema


def accepted(s: dict[str, Any]) -> dict[str, Any]:
    schema("parameters", s)
    return s


def test_the_anchor_vector_for_gemini_sanitization() -> None:
    # Case 11 of the edge-case list, exactly.
    src = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "mode": {"type": ["string", "null"], "enum": ["a", "b"], "default": "a"},
            "url": {"type": "string", "format": "uri"},
        },
    }
    assert accepted(to_gemini(src) or {}) == {
        "type": "OBJECT",
        "properties": {
            "mode": {"type": "STRING", "nullable": True, "enum": ["a", "b"], "format": "enum", "default": "a"},
            "url": {"type": "STRING", "description": "format: uri"},
        },
    }


def test_claude_code_status_enum_and_const_fold_into_one_enum() -> None:
    src = {
        "type": "object",
        "properties": {
            "status": {
                "description": "New status",
                "anyOf": [{"type": "string", "enum": ["pending", "done"]}, {"type": "string", "const": "deleted"}],
            }
        },
        "required": ["status"],
    }
    out = accepted(to_gemini(src) or {})
    assert out["properties"]["status"] == {
        "type": "STRING", "format": "enum", "enum": ["pending", "done", "deleted"], "description": "New status",
    }  # fmt: skip
    assert out["required"] == ["status"]


def test_optional_free_form_objects_are_left_out_and_required_lists_filtered() -> None:
    src = {
        "type": "object",
        "properties": {
            "subject": {"type": "string"},
            "metadata": {"type": "object", "propertyNames": {"type": "string"}, "additionalProperties": {}},
            "tags": {"type": "array"},
        },
        "required": ["subject", "ghost"],
    }
    assert accepted(to_gemini(src) or {}) == {
        "type": "OBJECT", "properties": {"subject": {"type": "STRING"}}, "required": ["subject"],
    }  # fmt: skip


@pytest.mark.parametrize(
    "prop",
    [
        {"type": "object", "additionalProperties": {"type": "string"}},  # a map
        {"type": "array"},  # items may be anything
        {},  # any value
    ],
)
def test_a_required_argument_without_a_gemini_form_is_inexpressible(prop: dict[str, Any]) -> None:
    with pytest.raises(Inexpressible):
        to_gemini({"type": "object", "properties": {"x": prop}, "required": ["x"]})


def test_a_tool_without_arguments_has_no_parameters() -> None:
    assert to_gemini({"$schema": "x", "type": "object", "properties": {}, "additionalProperties": False}) is None
    assert to_gemini({}) is None


def test_refs_are_inlined_and_recursion_is_inexpressible() -> None:
    src = {
        "type": "object",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
        "properties": {"p": {"$ref": "#/$defs/Point", "description": "where"}},
    }
    out = accepted(to_gemini(src) or {})
    assert out["properties"]["p"] == {"type": "OBJECT", "description": "where", "properties": {"x": {"type": "NUMBER"}}, "required": ["x"]}
    loop = {
        "type": "object",
        "definitions": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/definitions/Node"}}, "required": ["next"]}},
        "properties": {"head": {"$ref": "#/definitions/Node"}},
        "required": ["head"],
    }
    with pytest.raises(Inexpressible):
        to_gemini(loop)


def test_type_lists_all_of_one_of_and_bounds() -> None:
    src = {
        "type": "object",
        "properties": {
            "n": {"type": ["integer", "string"]},
            "k": {"type": "integer", "exclusiveMinimum": 0, "maximum": 10, "exclusiveMaximum": 8},
            "f": {"type": "number", "format": "double", "minimum": 0.5},
            "v": {"oneOf": [{"type": "boolean"}, {"type": "null"}]},
            "both": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
            "level": {"type": "integer", "enum": [1, 2, 3]},
            "when": {"type": "string", "format": "date-time", "minLength": 1},
        },
    }
    p = accepted(to_gemini(src) or {})["properties"]
    assert p["n"] == {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]}
    assert p["k"] == {"type": "INTEGER", "minimum": 1, "maximum": 7}
    assert p["f"] == {"type": "NUMBER", "format": "double", "minimum": 0.5}
    assert p["v"] == {"type": "BOOLEAN", "nullable": True}
    assert p["both"] == {"type": "OBJECT", "properties": {"a": {"type": "STRING"}, "b": {"type": "STRING"}}, "required": ["b"]}
    assert p["level"] == {"type": "INTEGER", "description": "one of: 1, 2, 3"}
    assert p["when"] == {"type": "STRING", "format": "date-time", "minLength": 1}


def test_response_schemas_may_be_any_type() -> None:
    assert response_schema({"type": "array", "items": {"type": "string"}}) == {"type": "ARRAY", "items": {"type": "STRING"}}


# -- any schema: the cleaner's output is accepted, or the schema is declared inexpressible --

_leaf = st.fixed_dictionaries(
    {"type": st.sampled_from(["string", "integer", "number", "boolean"])},
    optional={
        "description": st.text(max_size=8),
        "format": st.sampled_from(["uri", "email", "date-time", "int64", "float", "enum"]),
        "enum": st.lists(st.one_of(st.text(max_size=4), st.integers(), st.none()), min_size=1, max_size=3),
        "const": st.one_of(st.text(max_size=4), st.integers(), st.booleans()),
        "minimum": st.integers(-5, 5),
        "exclusiveMinimum": st.integers(-5, 5),
        "maxLength": st.integers(0, 9),
        "pattern": st.just("^a"),
        "default": st.none(),
    },
)


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.text(alphabet="abcxyz", min_size=1, max_size=3)
    obj = st.builds(
        lambda props, req, extra: {"type": "object", "properties": props, "required": req, **extra},
        st.dictionaries(names, children, max_size=3),
        st.lists(names, max_size=2),
        st.sampled_from([{}, {"additionalProperties": False}, {"additionalProperties": {"type": "string"}}]),
    )
    arr = st.builds(lambda items: {"type": "array", "items": items}, children)
    any_of = st.builds(lambda bs: {"anyOf": bs}, st.lists(st.one_of(children, st.just({"type": "null"})), min_size=1, max_size=3))
    listed = st.builds(lambda t: {"type": t}, st.lists(st.sampled_from(["string", "integer", "null"]), min_size=1, max_size=3, unique=True))
    return st.one_of(obj, arr, any_of, listed, st.just({}), st.just({"type": "object"}))


json_schemas = st.recursive(_leaf, _extend, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(alphabet="pqr", min_size=1, max_size=2), json_schemas, max_size=4))
def test_every_cleaned_schema_is_one_gemini_accepts(props: dict[str, Any]) -> None:
    src = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": props}
    try:
        out = to_gemini(src)
    except Inexpressible:
        return
    if out is not None:
        try:
            schema("parameters", out)
        except GeminiRequestError as e:
            pytest.fail(f"{src} -> {out}: {e}")
