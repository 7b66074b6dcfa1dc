"""What the Gemini API accepts in a generateContent / countTokens body, checked the way the
service checks it (written from the API reference and the errors it is known to return).

`validate(body)` raises `GeminiRequestError` with Gemini's own wording where it is known.
The fake Gemini upstream refuses what this refuses, and the conformance suite runs every
translated request through it, so a translation that the real API would reject fails the
tests instead of the user.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from typing import Any

REQUEST_FIELDS = {
    "contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
    "cachedContent", "model",
}  # fmt: skip
DATA_FIELDS = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult")
PART_FIELDS = {*DATA_FIELDS, "thought", "thoughtSignature", "videoMetadata", "mediaResolution"}
GENERATION_FIELDS = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "candidateCount",
    "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty", "frequencyPenalty",
    "responseLogprobs", "logprobs", "thinkingConfig", "mediaResolution", "responseModalities",
}  # fmt: skip
SCHEMA_FIELDS = {
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example",
    "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum",
}  # fmt: skip
TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
ONLY_ON = {
    "properties": "OBJECT", "required": "OBJECT", "propertyOrdering": "OBJECT", "minProperties": "OBJECT",
    "maxProperties": "OBJECT", "items": "ARRAY", "minItems": "ARRAY", "maxItems": "ARRAY",
    "minLength": "STRING", "maxLength": "STRING", "pattern": "STRING",
}  # fmt: skip
FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64", "enum"}}
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
TOOL_KINDS = {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext"}
MODES = {"AUTO", "ANY", "NONE", "VALIDATED"}
THINKING_LEVELS = {"minimal", "low", "medium", "high"}
SKIP_SIGNATURE = "skip_thought_signature_validator"


class GeminiRequestError(ValueError):
    """A body the Gemini API would refuse with 400 INVALID_ARGUMENT."""


def _fail(message: str) -> GeminiRequestError:
    return GeminiRequestError(message)


def _unknown(where: str, obj: dict[str, Any], allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed:
            raise _fail(f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': Cannot find field.')


def validate(body: Any) -> None:
    """Check a generateContent body; raise GeminiRequestError where Gemini would refuse it."""
    if not isinstance(body, dict):
        raise _fail("Invalid JSON payload received. Expected an object.")
    _unknown("", body, REQUEST_FIELDS)
    _contents(body.get("contents"))
    if "systemInstruction" in body:
        _system(body["systemInstruction"])
    names = _tools(body.get("tools", []))
    if "toolConfig" in body:
        _tool_config(body["toolConfig"], names)
    if "generationConfig" in body:
        _generation(body["generationConfig"])


def validate_count(body: Any) -> None:
    """Check a countTokens body ({contents} or {generateContentRequest})."""
    if not isinstance(body, dict):
        raise _fail("Invalid JSON payload received. Expected an object.")
    _unknown("", body, {"contents", "generateContentRequest"})
    if "generateContentRequest" in body:
        inner = body["generateContentRequest"]
        if not isinstance(inner, dict) or not str(inner.get("model", "")).startswith(("models/", "tunedModels/")):
            raise _fail("* CountTokensRequest.generate_content_request.model: the model name is required")
        validate(inner)
    else:
        _contents(body.get("contents"))


# -- contents ------------------------------------------------------------------------------


def _contents(contents: Any) -> None:
    if not isinstance(contents, list) or not contents:
        raise _fail("* GenerateContentRequest.contents: contents is not specified")
    prev: dict[str, Any] | None = None
    for i, c in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(c, dict):
            raise _fail(f"* GenerateContentRequest.{where}: must be an object")
        _unknown(where, c, {"role", "parts"})
        role = c.get("role")
        if role not in ("user", "model"):
            raise _fail(f"* GenerateContentRequest.{where}.role: Please use a valid role: user, model.")
        parts = c.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _fail(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
        for j, p in enumerate(parts):
            _part(f"{where}.parts[{j}]", p, role)
        if prev is not None and prev["role"] == role:
            raise _fail("Please ensure that multiturn requests alternate between user and model.")
        _pairing(i, prev, c)
        prev = c


def _part(where: str, p: Any, role: str) -> None:
    if not isinstance(p, dict):
        raise _fail(f"* GenerateContentRequest.{where}: must be an object")
    _unknown(where, p, PART_FIELDS)
    kinds = [k for k in DATA_FIELDS if k in p]
    if len(kinds) != 1:
        raise _fail(f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized field")
    kind = kinds[0]
    if "thought" in p and not isinstance(p["thought"], bool):
        raise _fail(f"* GenerateContentRequest.{where}.thought: must be a boolean")
    if "thoughtSignature" in p:
        _base64(f"{where}.thoughtSignature", p["thoughtSignature"])
    if kind == "text":
        if not isinstance(p["text"], str):
            raise _fail(f"* GenerateContentRequest.{where}.text: must be a string")
        if not p["text"] and "thoughtSignature" not in p:
            raise _fail("Unable to submit request because it has an empty text parameter. Add a value to the parameter and try again.")
    elif kind == "inlineData":
        d = p["inlineData"]
        if not isinstance(d, dict) or not isinstance(d.get("mimeType"), str) or not d.get("mimeType"):
            raise _fail(f"* GenerateContentRequest.{where}.inline_data.mime_type: required field")
        _unknown(f"{where}.inlineData", d, {"mimeType", "data"})
        _base64(f"{where}.inlineData.data", d.get("data"))
    elif kind == "fileData":
        d = p["fileData"]
        if not isinstance(d, dict) or not isinstance(d.get("fileUri"), str) or not d["fileUri"]:
            raise _fail(f"* GenerateContentRequest.{where}.file_data.file_uri: required field")
        _unknown(f"{where}.fileData", d, {"mimeType", "fileUri"})
    elif kind == "functionCall":
        if role != "model":
            raise _fail(f"* GenerateContentRequest.{where}: a function call can only come from the model")
        _call(where, p["functionCall"], "functionCall", "args")
    elif kind == "functionResponse":
        if role != "user":
            raise _fail(f"* GenerateContentRequest.{where}: a function response must come from the user")
        _call(where, p["functionResponse"], "functionResponse", "response")


def _call(where: str, fc: Any, kind: str, payload: str) -> None:
    if not isinstance(fc, dict):
        raise _fail(f"* GenerateContentRequest.{where}.{kind}: must be an object")
    _unknown(f"{where}.{kind}", fc, {"name", payload, "id", "parts", "willContinue", "scheduling"})
    if not isinstance(fc.get("name"), str) or not FUNCTION_NAME.match(fc["name"]):
        raise _fail(f"* GenerateContentRequest.{where}.{kind}.name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:) or dashes (-), with a maximum length of 64.")
    if payload in fc and not isinstance(fc[payload], dict):
        raise _fail(f"* GenerateContentRequest.{where}.{kind}.{payload}: must be a JSON object")
    if kind == "functionResponse" and payload not in fc:
        raise _fail(f"* GenerateContentRequest.{where}.function_response.response: required field")


def _pairing(i: int, prev: dict[str, Any] | None, c: dict[str, Any]) -> None:
    responses = [p["functionResponse"]["name"] for p in c["parts"] if "functionResponse" in p]
    calls = [p["functionCall"]["name"] for p in prev["parts"] if "functionCall" in p] if prev else []
    if responses and not calls:
        raise _fail("Please ensure that function response turn comes immediately after a function call turn.")
    if calls and c["role"] == "user":
        if len(responses) != len(calls):
            raise _fail(
                "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn."
            )
        if Counter(responses) != Counter(calls):
            raise _fail(f"* GenerateContentRequest.contents[{i}]: function responses {responses} do not answer the calls {calls}")


def _base64(where: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise _fail(f"* GenerateContentRequest.{where}: must be a non-empty base64 string")
    try:
        base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_" if "-" in value or "_" in value else None, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f'Invalid value at \'{where}\' (TYPE_BYTES), Base64 decoding failed for "{value[:40]}"') from None


def _system(s: Any) -> None:
    if not isinstance(s, dict):
        raise _fail("* GenerateContentRequest.system_instruction: must be a Content object")
    _unknown("system_instruction", s, {"parts", "role"})
    parts = s.get("parts")
    if not isinstance(parts, list) or not parts:
        raise _fail("* GenerateContentRequest.system_instruction.parts: must not be empty")
    for j, p in enumerate(parts):
        if not isinstance(p, dict) or set(p) != {"text"} or not isinstance(p["text"], str) or not p["text"]:
            raise _fail(f"* GenerateContentRequest.system_instruction.parts[{j}]: only non-empty text parts are allowed")


# -- tools and config ----------------------------------------------------------------------


def _tools(tools: Any) -> set[str]:
    if not isinstance(tools, list):
        raise _fail("* GenerateContentRequest.tools: must be a list")
    names: set[str] = set()
    for k, t in enumerate(tools):
        where = f"tools[{k}]"
        if not isinstance(t, dict) or len(t) != 1 or next(iter(t)) not in TOOL_KINDS:
            raise _fail(f"* GenerateContentRequest.{where}: a tool must be exactly one of {sorted(TOOL_KINDS)}")
        decls = t.get("functionDeclarations")
        if decls is None:
            continue
        if not isinstance(decls, list) or not decls:
            raise _fail(f"* GenerateContentRequest.{where}.function_declarations: must not be empty")
        for d, decl in enumerate(decls):
            name = _declaration(f"{where}.function_declarations[{d}]", decl)
            if name in names:
                raise _fail(f"* GenerateContentRequest.{where}: Duplicate function declaration found: {name}")
            names.add(name)
    return names


def _declaration(where: str, decl: Any) -> str:
    if not isinstance(decl, dict):
        raise _fail(f"* GenerateContentRequest.{where}: must be an object")
    _unknown(where, decl, {"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema", "behavior"})
    name = decl.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.match(name):
        raise _fail(f"* GenerateContentRequest.{where}.name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:) or dashes (-), with a maximum length of 64.")
    if "parameters" in decl and "parametersJsonSchema" in decl:
        raise _fail(f"* GenerateContentRequest.{where}: parameters and parameters_json_schema are mutually exclusive")
    if "parameters" in decl:
        schema(f"{where}.parameters", decl["parameters"])
        if _type(decl["parameters"]) != "OBJECT":
            raise _fail(f"* GenerateContentRequest.{where}.parameters.type: must be OBJECT")
    if "parametersJsonSchema" in decl:
        js = decl["parametersJsonSchema"]
        if not isinstance(js, dict) or js.get("type") != "object":
            raise _fail(f"* GenerateContentRequest.{where}.parameters_json_schema: must describe an object")
    return name


def _type(s: Any) -> str | None:
    t = s.get("type") if isinstance(s, dict) else None
    return t.upper() if isinstance(t, str) else None


def schema(where: str, s: Any) -> None:
    """Check one Gemini `Schema` (the OpenAPI subset) and everything under it."""
    if not isinstance(s, dict):
        raise _fail(f"* GenerateContentRequest.{where}: must be a Schema object")
    _unknown(where, s, SCHEMA_FIELDS)
    t = _type(s)
    if "type" in s and t not in TYPES:
        raise _fail(f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.generativelanguage.v1beta.Type), \"{s['type']}\"")
    if t is None and "anyOf" not in s:
        raise _fail(f"* GenerateContentRequest.{where}.type: must be specified")
    for key, on in ONLY_ON.items():
        if key in s and t != on:
            raise _fail(f"* GenerateContentRequest.{where}.{key}: only allowed for {on} type")
    if t == "OBJECT" and not s.get("properties"):
        raise _fail(f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type")
    if t == "ARRAY" and "items" not in s:
        raise _fail(f"* GenerateContentRequest.{where}.items: missing field.")
    if "format" in s and s["format"] not in FORMATS.get(t or "", set()):
        raise _fail(f"* GenerateContentRequest.{where}.format: only {sorted(FORMATS.get(t or '', set()))} are supported for {t} type")
    if "enum" in s:
        if t not in ("STRING", "INTEGER") or not isinstance(s["enum"], list) or not all(isinstance(v, str) for v in s["enum"]):
            raise _fail(f"* GenerateContentRequest.{where}.enum: only allowed for STRING type")
    for key in sorted(s.keys() & {"minimum", "maximum"}):
        if t not in ("NUMBER", "INTEGER") or not isinstance(s[key], int | float):
            raise _fail(f"* GenerateContentRequest.{where}.{key}: only allowed for NUMBER and INTEGER types")
    if "nullable" in s and not isinstance(s["nullable"], bool):
        raise _fail(f"* GenerateContentRequest.{where}.nullable: must be a boolean")
    for name, sub in (s.get("properties") or {}).items():
        schema(f"{where}.properties[{name}]", sub)
    missing = [r for r in s.get("required", []) if r not in (s.get("properties") or {})]
    if missing:
        raise _fail(f"* GenerateContentRequest.{where}.required[0]: property is not defined: {missing[0]}")
    if "items" in s:
        schema(f"{where}.items", s["items"])
    for n, sub in enumerate(s.get("anyOf", [])):
        schema(f"{where}.any_of[{n}]", sub)


def _tool_config(c: Any, names: set[str]) -> None:
    fc = c.get("functionCallingConfig") if isinstance(c, dict) else None
    if not isinstance(fc, dict) or fc.get("mode") not in MODES:
        raise _fail("* GenerateContentRequest.tool_config.function_calling_config.mode: must be AUTO, ANY, NONE or VALIDATED")
    allowed = fc.get("allowedFunctionNames")
    if allowed is not None:
        if fc["mode"] != "ANY":
            raise _fail("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: only allowed with mode ANY")
        unknown = [n for n in allowed if n not in names]
        if unknown:
            raise _fail(f"* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: function {unknown[0]} is not declared")
    if not names:
        raise _fail("* GenerateContentRequest.tool_config: set without any function declaration")


def _generation(g: Any) -> None:
    if not isinstance(g, dict):
        raise _fail("* GenerateContentRequest.generation_config: must be an object")
    _unknown("generation_config", g, GENERATION_FIELDS)
    stops = g.get("stopSequences", [])
    if not isinstance(stops, list) or len(stops) > 5:
        raise _fail("* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed")
    max_out = g.get("maxOutputTokens")
    if max_out is not None and (not isinstance(max_out, int) or max_out < 1):
        raise _fail("* GenerateContentRequest.generation_config.max_output_tokens: must be a positive integer")
    if ("responseSchema" in g or "responseJsonSchema" in g) and g.get("responseMimeType") != "application/json":
        raise _fail("* GenerateContentRequest.generation_config.response_mime_type: a response schema needs application/json")
    if "responseSchema" in g:
        schema("generation_config.response_schema", g["responseSchema"])
    t = g.get("thinkingConfig")
    if t is not None:
        if not isinstance(t, dict):
            raise _fail("* GenerateContentRequest.generation_config.thinking_config: must be an object")
        _unknown("generation_config.thinking_config", t, {"includeThoughts", "thinkingBudget", "thinkingLevel"})
        if "thinkingBudget" in t and "thinkingLevel" in t:
            raise _fail("thinking_budget and thinking_level are not supported together.")
        if "thinkingLevel" in t and str(t["thinkingLevel"]).lower() not in THINKING_LEVELS:
            raise _fail(f"* GenerateContentRequest.generation_config.thinking_config.thinking_level: invalid value {t['thinkingLevel']!r}")
        budget = t.get("thinkingBudget")
        if budget is not None and (not isinstance(budget, int) or budget < -1 or budget > 32768):
            raise _fail("* GenerateContentRequest.generation_config.thinking_config.thinking_budget: must be between -1 and 32768")


def signed_function_calls(contents: list[dict[str, Any]]) -> list[tuple[int, int, str | None]]:
    """(content index, part index, signature) of the first function call of every model turn."""
    out = []
    for i, c in enumerate(contents):
        if c.get("role") != "model":
            continue
        for j, p in enumerate(c.get("parts", [])):
            if "functionCall" in p:
                out.append((i, j, p.get("thoughtSignature")))
                break
    return out
