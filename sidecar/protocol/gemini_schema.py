"""JSON Schema (as Anthropic tools carry it) to Gemini's `Schema`, the OpenAPI 3.0 subset.

Gemini rejects what its subset lacks: `$schema`, `additionalProperties`, `const`, type
lists, `oneOf`, string formats other than `enum` and `date-time`, `properties` outside an
OBJECT, an OBJECT without properties, an ARRAY without `items`. The cleaner rewrites what
has an equivalent and drops only what changes no valid call:

- `$ref` into `$defs` / `definitions` is inlined (recursion ends in `Inexpressible`);
- `type: [T, "null"]` and an `anyOf` branch `{"type": "null"}` become `nullable`;
  other type lists become `anyOf`; `oneOf` becomes `anyOf`; `allOf` is merged;
- `const` becomes a one-value `enum`; string enums get `format: enum`; non-string enums
  and unsupported formats move into the description, where the model still reads them;
- exclusive bounds become inclusive ones (integers step by one);
- `required` keeps only names that exist in `properties`.

A free-form object (no properties, e.g. a map of strings) or an array of anything has no
form in the subset. An optional property of that kind is left out of the declaration; a
required one makes the whole schema `Inexpressible`, and the caller sends that tool as
`parametersJsonSchema` (the full JSON Schema, which Gemini's v1beta also accepts) instead.
"""

from __future__ import annotations

import copy
from typing import Any

# Gemini Schema fields, and the type each is allowed on (None: any type).
FIELDS: dict[str, str | None] = {
    "type": None, "format": None, "title": None, "description": None, "nullable": None,
    "enum": None, "default": None, "anyOf": None, "example": None,
    "properties": "OBJECT", "required": "OBJECT", "propertyOrdering": "OBJECT",
    "minProperties": "OBJECT", "maxProperties": "OBJECT",
    "items": "ARRAY", "minItems": "ARRAY", "maxItems": "ARRAY",
    "minLength": "STRING", "maxLength": "STRING", "pattern": "STRING",
    "minimum": "NUMBER", "maximum": "NUMBER",
}  # fmt: skip
TYPES = ("STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT")
FORMATS = {"STRING": ("enum", "date-time"), "NUMBER": ("float", "double"), "INTEGER": ("int32", "int64")}
MAX_REF_DEPTH = 16

_JSON_TYPES = {
    "string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN",
    "array": "ARRAY", "object": "OBJECT", "null": "NULL",
}  # fmt: skip
# JSON Schema keywords with a same-named Gemini field whose value is copied as is.
_COPIED = ("title", "pattern", "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")


class Inexpressible(ValueError):
    """The schema needs something Gemini's Schema subset cannot say."""


def to_gemini(schema: Any) -> dict[str, Any] | None:
    """The Gemini `Schema` for a tool's `input_schema`; None when the tool takes no
    arguments (Gemini wants no `parameters` then). Raises `Inexpressible`."""
    if not isinstance(schema, dict):
        raise Inexpressible(f"a tool's input_schema must be a JSON object, not {type(schema).__name__}")
    if not any(k in schema for k in ("type", "$ref", "anyOf", "oneOf", "allOf")):
        schema = {**schema, "type": "object"}  # a bare list of properties
    out = _Cleaner(schema).node(schema, 0)
    if out.get("type") != "OBJECT":
        raise Inexpressible("a tool's input_schema must describe an object")
    return out if out.get("properties") else None


def response_schema(schema: Any) -> dict[str, Any]:
    """The Gemini `Schema` for structured output (any type at the root)."""
    if not isinstance(schema, dict):
        raise Inexpressible("the output format's schema must be a JSON object")
    return _Cleaner(schema).node(schema, 0)


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` as Gemini's `parametersJsonSchema` takes it (without `$schema`)."""
    out = copy.deepcopy(schema)
    out.pop("$schema", None)
    out.setdefault("type", "object")
    return out


class _Cleaner:
    """One schema's conversion; holds the root for `$ref` lookups."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def node(self, s: Any, depth: int) -> dict[str, Any]:
        """The Gemini form of one schema node."""
        if s is True or s == {}:
            raise Inexpressible("a schema that allows any value")
        if not isinstance(s, dict):
            raise Inexpressible(f"a schema must be an object, not {s!r}")
        s = self._resolve(s, depth)
        if "allOf" in s:
            s = self._merge_all_of(s, depth)
        branches = s.get("anyOf", s.get("oneOf"))
        if isinstance(branches, list) and branches:
            return self._any_of(s, branches, depth)
        types = s.get("type")
        if isinstance(types, list):
            return self._type_list(s, types, depth)
        return self._single(s, depth)

    # -- structure ------------------------------------------------------------------------

    def _resolve(self, s: dict[str, Any], depth: int) -> dict[str, Any]:
        ref = s.get("$ref")
        if not isinstance(ref, str):
            return s
        if depth > MAX_REF_DEPTH:
            raise Inexpressible(f"$ref {ref!r} is recursive")
        target: Any = self.root
        if not ref.startswith("#"):
            raise Inexpressible(f"$ref {ref!r} points outside the schema")
        for piece in filter(None, ref[1:].split("/")):
            piece = piece.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or piece not in target:
                raise Inexpressible(f"$ref {ref!r} does not resolve")
            target = target[piece]
        if not isinstance(target, dict):
            raise Inexpressible(f"$ref {ref!r} does not point to a schema")
        merged = {**target, **{k: v for k, v in s.items() if k != "$ref"}}
        return self._resolve(merged, depth + 1)

    def _merge_all_of(self, s: dict[str, Any], depth: int) -> dict[str, Any]:
        out = {k: v for k, v in s.items() if k != "allOf"}
        for part in s["allOf"] if isinstance(s["allOf"], list) else []:
            part = self._resolve(part, depth + 1) if isinstance(part, dict) else {}
            for k, v in part.items():
                if k == "properties" and isinstance(v, dict):
                    out["properties"] = {**out.get("properties", {}), **v}
                elif k == "required" and isinstance(v, list):
                    out["required"] = [*out.get("required", []), *v]
                else:
                    out.setdefault(k, v)
        return out

    def _any_of(self, s: dict[str, Any], branches: list[Any], depth: int) -> dict[str, Any]:
        nullable = any(isinstance(b, dict) and b.get("type") == "null" for b in branches)
        kept = [self.node(b, depth + 1) for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
        if not kept:
            raise Inexpressible("an anyOf that allows only null")
        if all(b.get("type") == "STRING" and "enum" in b for b in kept):
            # Enum branches (Claude Code's `status`: an enum plus a const) fold into one enum.
            out: dict[str, Any] = {"type": "STRING", "format": "enum", "enum": _unique(v for b in kept for v in b["enum"])}
        elif len(kept) == 1:
            out = kept[0]
        else:
            out = {"anyOf": kept}
        _describe(out, s)
        if nullable or out.get("nullable"):
            out["nullable"] = True
        return out

    def _type_list(self, s: dict[str, Any], types: list[Any], depth: int) -> dict[str, Any]:
        real = [t for t in types if t != "null"]
        if not real:
            raise Inexpressible("a type list that allows only null")
        if len(real) == 1:
            out = self._single({**s, "type": real[0]}, depth)
        else:
            out = {"anyOf": [self._single({**s, "type": t}, depth) for t in real]}
            _describe(out, s)
        if len(real) < len(types):
            out["nullable"] = True
        return out

    # -- one typed node -------------------------------------------------------------------

    def _single(self, s: dict[str, Any], depth: int) -> dict[str, Any]:
        gtype = self._type_of(s)
        out: dict[str, Any] = {"type": gtype}
        notes: list[str] = []
        _describe(out, s)
        for key in _COPIED:
            if key in s and _allowed(key, gtype) and _scalar_ok(key, s[key]):
                out[key] = s[key]
        if s.get("nullable") is True:
            out["nullable"] = True
        self._enum(s, gtype, out, notes)
        self._format(s, gtype, out, notes)
        if gtype in ("NUMBER", "INTEGER"):
            _bounds(s, gtype, out)
        if "default" in s and s["default"] is not None:
            out["default"] = s["default"]
        if gtype == "OBJECT":
            self._object(s, out, depth)
        elif gtype == "ARRAY":
            items = s.get("items")
            if isinstance(items, list):
                items = items[0] if items else None
            if items is None:
                raise Inexpressible("an array whose items may be anything")
            out["items"] = self.node(items, depth + 1)
        if notes:
            note = "; ".join(notes)
            out["description"] = f"{out['description']} ({note})" if out.get("description") else note
        return out

    def _type_of(self, s: dict[str, Any]) -> str:
        t = s.get("type")
        if isinstance(t, str):
            gtype = _JSON_TYPES.get(t.lower())
            if gtype is None or gtype == "NULL":
                raise Inexpressible(f"type {t!r}")
            return gtype
        if "properties" in s:
            return "OBJECT"
        if "items" in s:
            return "ARRAY"
        values = s.get("enum") if "enum" in s else ([s["const"]] if "const" in s else None)
        if isinstance(values, list) and values:
            return _value_type(values[0])
        raise Inexpressible("a schema without a type")

    def _object(self, s: dict[str, Any], out: dict[str, Any], depth: int) -> None:
        props = s.get("properties")
        required = [r for r in s.get("required", []) if isinstance(r, str)] if isinstance(s.get("required"), list) else []
        kept: dict[str, Any] = {}
        for name, sub in (props or {}).items() if isinstance(props, dict) else ():
            try:
                kept[name] = self.node(sub, depth + 1)
            except Inexpressible:
                if name in required:
                    raise
                continue  # an optional argument Gemini cannot describe is left out
        if not kept:
            if depth == 0:
                return  # a tool without arguments: the caller omits `parameters`
            raise Inexpressible("an object whose properties may be anything")
        out["properties"] = kept
        req = [r for r in _unique(required) if r in kept]
        if req:
            out["required"] = req

    @staticmethod
    def _enum(s: dict[str, Any], gtype: str, out: dict[str, Any], notes: list[str]) -> None:
        values = s.get("enum") if isinstance(s.get("enum"), list) else None
        if values is None and "const" in s:
            values = [s["const"]]
        if values is None:
            return
        non_null = [v for v in values if v is not None]
        if len(non_null) < len(values):
            out["nullable"] = True
        if gtype == "STRING" and all(isinstance(v, str) for v in non_null) and non_null:
            out["enum"] = _unique(non_null)
            out["format"] = "enum"
        elif non_null:
            notes.append("one of: " + ", ".join(_show(v) for v in non_null))

    @staticmethod
    def _format(s: dict[str, Any], gtype: str, out: dict[str, Any], notes: list[str]) -> None:
        fmt = s.get("format")
        if not isinstance(fmt, str) or "format" in out:
            return
        if fmt in FORMATS.get(gtype, ()):
            out["format"] = fmt
        else:
            notes.append(f"format: {fmt}")


def _describe(out: dict[str, Any], s: dict[str, Any]) -> None:
    if isinstance(s.get("description"), str) and s["description"] and "description" not in out:
        out["description"] = s["description"]
    if isinstance(s.get("title"), str) and "title" not in out:
        out["title"] = s["title"]


def _bounds(s: dict[str, Any], gtype: str, out: dict[str, Any]) -> None:
    """Inclusive bounds from JSON Schema's inclusive and exclusive ones (integers step by one)."""
    step = 1 if gtype == "INTEGER" else 0
    for key, excl, sign in (("minimum", "exclusiveMinimum", 1), ("maximum", "exclusiveMaximum", -1)):
        bounds: list[float] = []
        value, ex = s.get(key), s.get(excl)
        if isinstance(value, int | float) and not isinstance(value, bool):
            bounds.append(value + sign * step if ex is True else value)  # draft-4 boolean form
        if isinstance(ex, int | float) and not isinstance(ex, bool):
            bounds.append(ex + sign * step)
        if bounds:
            out[key] = max(bounds) if sign > 0 else min(bounds)


def _allowed(key: str, gtype: str) -> bool:
    on = FIELDS.get(key)
    return on is None or on == gtype or (on == "NUMBER" and gtype == "INTEGER")


def _scalar_ok(key: str, v: Any) -> bool:
    return isinstance(v, str) if key in ("title", "pattern") else _number(v) and v >= 0


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _value_type(v: Any) -> str:
    if isinstance(v, bool):
        return "BOOLEAN"
    if isinstance(v, int):
        return "INTEGER"
    if isinstance(v, float):
        return "NUMBER"
    if isinstance(v, str):
        return "STRING"
    raise Inexpressible(f"an enum of {type(v).__name__} values")


def _unique(values: Any) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _show(v: Any) -> str:
    return v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else repr(v)
