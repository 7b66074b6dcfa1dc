"""Build the adapter for a configured provider."""

from __future__ import annotations

import importlib

import aiohttp

from sidecar.providers.base import Provider
from sidecar.providers.config import ProviderConfig
from sidecar.secrets import ResolvedKey

# type -> "module:Class"; modules are imported only when a provider of that type is configured.
ADAPTERS = {
    "anthropic": "sidecar.providers.anthropic:AnthropicProvider",
    "openai": "sidecar.providers.openai:OpenAIProvider",
    "openai-compatible": "sidecar.providers.openai:OpenAIProvider",
    "gemini": "sidecar.providers.gemini:GeminiProvider",
    "bedrock": "sidecar.providers.bedrock:BedrockProvider",
    "vertex": "sidecar.providers.vertex:VertexProvider",
}


def build(cfg: ProviderConfig, keys: list[ResolvedKey], session: aiohttp.ClientSession) -> Provider:
    """The adapter for `cfg`, with its resolved keys and the app's HTTP session."""
    module, cls = ADAPTERS[cfg.type].split(":")
    adapter: Provider = getattr(importlib.import_module(module), cls)(cfg, keys, session)
    return adapter
