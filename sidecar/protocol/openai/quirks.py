"""Per-server differences of OpenAI-format upstreams, as small named switches.

A provider of type `openai` or `openai-compatible` starts from a preset (`preset = "vllm"`;
`openai` for type openai, `generic` otherwise) and may override any switch in its
`quirks` table::

    [[providers]]
    name = "deepseek"
    type = "openai-compatible"
    base_url = "https://api.deepseek.com/v1"
    preset = "deepseek"
    quirks = { max_tokens_cap = { "deepseek-chat" = 8192 }, include_usage = true }

Every switch is read and checked when the adapter is built: an unknown key, a wrong kind or
a value outside its choices is a ConfigError naming the provider and the key.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from sidecar.errors import ConfigError

MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")
TOOL_ID_MODES = ("keep", "sanitize", "mistral")
REASONING_FIELDS = ("reasoning_content", "reasoning")
REASONING_REQUESTS = ("none", "effort", "openrouter")
TOOL_CHOICE_MODES = ("full", "no-required", "off")
SYSTEM_MODES = ("keep", "hoist")
JSON_SCHEMA_MODES = ("strict", "loose", "json_object", "off")


@dataclass(frozen=True)
class Quirks:
    """What one OpenAI-format server accepts and how it answers."""

    # The request field that carries the output limit (OpenAI's reasoning models reject max_tokens).
    max_tokens_field: str = "max_tokens"
    # (model glob, cap) pairs, first match wins: the largest max_tokens the model takes.
    max_tokens_cap: tuple[tuple[str, int], ...] = ()
    # Ask for the final choiceless usage chunk (`stream_options.include_usage`).
    include_usage: bool = True
    # keep: ids as they are; sanitize: ids outside ^[A-Za-z0-9_-]{1,max}$ are rewritten to a
    # hash; mistral: every id becomes 9 alphanumerics (Mistral's templates demand it).
    tool_ids: str = "sanitize"
    tool_id_max_length: int = 40
    # The message field reasoning is replayed in (answers are read from either field).
    reasoning_field: str = "reasoning_content"
    # Replay thinking from earlier assistant turns in `reasoning_field` (DeepSeek needs it
    # within a tool loop); otherwise thinking in history is dropped.
    send_reasoning: bool = False
    # How thinking / output_config.effort is asked for: not at all, `reasoning_effort`, or
    # OpenRouter's `reasoning` object.
    reasoning_request: str = "none"
    # Model globs of reasoning models: they take the reasoning parameter (others reject it).
    reasoning_models: tuple[str, ...] = ("*",)
    # Request fields reasoning models reject (OpenAI's take no temperature or top_p).
    reasoning_drop_params: tuple[str, ...] = ()
    # full: auto / required / none / a named function; no-required: `any` becomes auto;
    # off: tool_choice is never sent (the server rejects or ignores it).
    tool_choice: str = "full"
    # Send `parallel_tool_calls: false` when the client disables parallel tool use.
    parallel_tool_calls: bool = True
    # keep: role "system" messages stay where they are; hoist: merged into the first one
    # (chat templates that allow a system message only at the start).
    system_messages: str = "keep"
    # How output_config.format (JSON schema) is sent: strict json_schema when the schema fits
    # OpenAI's strict subset (else non-strict), non-strict json_schema, json_object, or not at all.
    json_schema: str = "loose"
    # Schema keys removed at every level of tool parameter schemas.
    strip_schema_keys: tuple[str, ...] = ("$schema",)
    # Pass Anthropic's top_k through (vLLM, OpenRouter and Ollama read it; OpenAI rejects it).
    top_k: bool = False
    max_stop_sequences: int = 4
    # Request fields never sent, whatever the client asked (e.g. "temperature").
    drop_params: tuple[str, ...] = ()

    def cap_for(self, model: str) -> int | None:
        """The max_tokens cap for `model`, or None."""
        return next((cap for glob, cap in self.max_tokens_cap if fnmatch.fnmatchcase(model, glob)), None)

    def is_reasoning_model(self, model: str) -> bool:
        """Whether `model` matches `reasoning_models`."""
        return any(fnmatch.fnmatchcase(model, g) for g in self.reasoning_models)

    def reasoning_for(self, model: str) -> bool:
        """Whether `model` is sent the reasoning parameter."""
        return self.reasoning_request != "none" and self.is_reasoning_model(model)


_OPENAI_CAPS = (
    ("gpt-4o*", 16384),
    ("chatgpt-4o*", 16384),
    ("gpt-4.1*", 32768),
    ("gpt-4-turbo*", 4096),
    ("gpt-4", 8192),
    ("gpt-3.5*", 4096),
)

PRESETS: dict[str, dict[str, Any]] = {
    "generic": {},
    "openai": {
        "max_tokens_field": "max_completion_tokens",
        "max_tokens_cap": _OPENAI_CAPS,
        "reasoning_request": "effort",
        "reasoning_models": ("o1*", "o3*", "o4*", "gpt-5*", "gpt-oss*"),
        "reasoning_drop_params": ("temperature", "top_p"),
        "json_schema": "strict",
    },
    "vllm": {"system_messages": "hoist", "top_k": True},
    "ollama": {"system_messages": "hoist", "tool_choice": "off", "parallel_tool_calls": False},
    "openrouter": {
        "reasoning_field": "reasoning",
        "reasoning_request": "openrouter",
        "top_k": True,
    },
    "deepseek": {
        "max_tokens_cap": (("deepseek-chat", 8192), ("deepseek-reasoner", 65536)),
        "send_reasoning": True,
        "system_messages": "hoist",
        "json_schema": "json_object",
    },
    "groq": {
        "max_tokens_cap": (("openai/gpt-oss*", 65536), ("*", 32768)),
        "reasoning_field": "reasoning",
    },
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "max_tokens_field": MAX_TOKENS_FIELDS,
    "tool_ids": TOOL_ID_MODES,
    "reasoning_field": REASONING_FIELDS,
    "reasoning_request": REASONING_REQUESTS,
    "tool_choice": TOOL_CHOICE_MODES,
    "system_messages": SYSTEM_MODES,
    "json_schema": JSON_SCHEMA_MODES,
}


def quirks_for(provider: str, ptype: str, options: dict[str, Any]) -> Quirks:
    """The quirks of one configured provider: its preset, then its `quirks` table."""
    where = f"provider {provider!r}"
    preset = options.get("preset", "openai" if ptype == "openai" else "generic")
    if preset not in PRESETS:
        raise ConfigError(f"{where}: preset {preset!r} is unknown (choose one of: {', '.join(PRESETS)})")
    table = options.get("quirks", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: quirks must be a table")
    values = dict(PRESETS[preset])
    known = {f.name for f in dataclasses.fields(Quirks)}
    for key, raw in table.items():
        if key not in known:
            raise ConfigError(f"{where}: quirks.{key} is not a known quirk (known: {', '.join(sorted(known))})")
        values[key] = _read(f"{where}: quirks.{key}", key, raw)
    return Quirks(**values)


def _read(where: str, key: str, raw: Any) -> Any:
    default = next(f.default for f in dataclasses.fields(Quirks) if f.name == key)
    if key == "max_tokens_cap":
        return _caps(where, raw)
    if key in _CHOICES:
        if raw not in _CHOICES[key]:
            raise ConfigError(f"{where}: {raw!r} is not one of {', '.join(_CHOICES[key])}")
        return raw
    if isinstance(default, bool):
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: must be true or false, not {raw!r}")
        return raw
    if isinstance(default, int):
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise ConfigError(f"{where}: must be a positive integer, not {raw!r}")
        return raw
    if isinstance(default, tuple):
        if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
            raise ConfigError(f"{where}: must be a list of non-empty strings, not {raw!r}")
        return tuple(raw)
    raise AssertionError(f"quirk {key} has no reader")  # every field kind is handled above


def _caps(where: str, raw: Any) -> tuple[tuple[str, int], ...]:
    """`8192` (every model) or `{ "gpt-4o*" = 16384, "*" = 32768 }` (first match wins)."""
    items = {"*": raw}.items() if isinstance(raw, int) and not isinstance(raw, bool) else None
    if items is None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a positive integer or a table of model glob = integer")
        items = raw.items()
    out: list[tuple[str, int]] = []
    for glob, cap in items:
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ConfigError(f"{where}: the cap for {glob!r} must be a positive integer, not {cap!r}")
        out.append((glob, cap))
    return tuple(out)


@dataclass(frozen=True)
class ProviderOptions:
    """An OpenAI-format provider's options, checked: its quirks and extra request headers."""

    quirks: Quirks
    headers: tuple[tuple[str, str], ...] = field(default=())


_FORBIDDEN_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "accept-encoding", "authorization"}
)


def read_options(provider: str, ptype: str, options: dict[str, Any]) -> ProviderOptions:
    """Check a provider's `preset`, `quirks` and `headers` (ConfigError names what is wrong)."""
    quirks = quirks_for(provider, ptype, options)
    raw = options.get("headers", {})
    where = f"provider {provider!r}: headers"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table of name = value")
    headers: list[tuple[str, str]] = []
    for name, value in raw.items():
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ConfigError(f"{where}: {name!r} is not a valid header name")
        if name.lower() in _FORBIDDEN_HEADERS:
            raise ConfigError(f"{where}: {name} is set by the sidecar and cannot be configured")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise ConfigError(f"{where}: the value of {name} must be a one-line string")
        headers.append((name, value))
    return ProviderOptions(quirks, tuple(headers))
