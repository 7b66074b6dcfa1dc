"""JSON Schema handling for OpenAI-format servers: cleaning tool parameter schemas and
checking whether a structured-output schema fits OpenAI's strict subset."""

from __future__ import annotations

from typing import Any

# Keys whose value maps *names* to schemas (a property called "$schema" is not a keyword).
_NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
# Keys whose value is data, not schemas.
_DATA = frozenset({"enum", "const", "default", "examples", "required", "description", "title"})
# Keywords strict mode rejects (structured outputs accept a subset of JSON Schema).
_NOT_STRICT = frozenset(
    {
        "allOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
        "patternProperties", "unevaluatedProperties", "propertyNames", "minProperties",
        "maxProperties", "contains", "unevaluatedItems",
    }
)  # fmt: skip


def clean_schema(node: Any, strip: tuple[str, ...]) -> Any:
    """A copy of the schema `node` without the keywords in `strip`, at every level."""
    if isinstance(node, list):
        return [clean_schema(x, strip) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in strip:
            continue
        if key in _NAME_MAPS and isinstance(value, dict):
            out[key] = {name: clean_schema(sub, strip) for name, sub in value.items()}
        elif key in _DATA:
            out[key] = value
        else:
            out[key] = clean_schema(value, strip)
    return out


def fits_strict(node: Any) -> bool:
    """True when `node` is already in the strict subset: every object closed
    (`additionalProperties: false`) with every property required, and no unsupported keyword."""
    if isinstance(node, list):
        return all(fits_strict(x) for x in node)
    if not isinstance(node, dict):
        return True
    if any(k in node for k in _NOT_STRICT):
        return False
    props = node.get("properties")
    if node.get("type") == "object" or isinstance(props, dict):
        props = props if isinstance(props, dict) else {}
        if node.get("additionalProperties") is not False:
            return False
        if set(node.get("required") or []) != set(props):
            return False
    for key, value in node.items():
        if key in _DATA:
            continue
        if key in _NAME_MAPS and isinstance(value, dict):
            if not all(fits_strict(sub) for sub in value.values()):
                return False
        elif not fits_strict(value):
            return False
    return True
