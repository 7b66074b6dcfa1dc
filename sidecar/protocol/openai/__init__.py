"""The OpenAI Chat Completions wire format, as the `openai` and `openai-compatible`
providers speak it: Anthropic requests translated to it (`request`), its answers, usage and
errors translated back (`response`), its SSE streams translated event by event (`stream`),
and the per-server differences as named switches (`quirks`).

Modules: quirks (Quirks, presets, config checks), names (tool names and ids), schema (JSON
Schema cleaning), request, response, stream.
"""

from __future__ import annotations

from sidecar.protocol.openai.names import ToolNames
from sidecar.protocol.openai.quirks import (
    PRESETS,
    ProviderOptions,
    Quirks,
    quirks_for,
    read_options,
)
from sidecar.protocol.openai.request import translate_request
from sidecar.protocol.openai.response import translate_error, translate_message
from sidecar.protocol.openai.stream import ChatStream

__all__ = [
    "PRESETS",
    "ChatStream",
    "ProviderOptions",
    "Quirks",
    "ToolNames",
    "quirks_for",
    "read_options",
    "translate_error",
    "translate_message",
    "translate_request",
]
