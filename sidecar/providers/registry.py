"""The provider types the config accepts: default base URL and the extra keys each type reads.

Kept free of heavy imports: `providers/config.py` validates `[[providers]]` tables against it, and
`providers.build` constructs the adapter named here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProviderType:
    """One provider family as the config sees it."""

    name: str
    default_base_url: str | None  # None: `base_url` is required (or derived from options)
    # Extra keys allowed in a [[providers]] table of this type, with their TOML kinds.
    options: dict[str, tuple[type, ...]] = field(default_factory=dict)
    speaks_anthropic: bool = False  # the body goes upstream as Anthropic (bytes untouched)


_OPENAI_OPTIONS: dict[str, tuple[type, ...]] = {
    "preset": (str,),  # vllm | ollama | openrouter | deepseek | groq | openai
    "quirks": (dict,),  # named quirk switches, see sidecar.protocol.openai.Quirks
    "headers": (dict,),  # extra request headers (e.g. OpenRouter's HTTP-Referer)
}

# Options whose value must be one of a few words, checked when the config is read.
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {("bedrock", "api"): ("auto", "invoke", "converse")}

TYPES: dict[str, ProviderType] = {
    t.name: t
    for t in (
        ProviderType("anthropic", "https://api.anthropic.com", speaks_anthropic=True),
        ProviderType("openai", "https://api.openai.com/v1", _OPENAI_OPTIONS),
        ProviderType("openai-compatible", None, _OPENAI_OPTIONS),
        ProviderType(
            "gemini",
            "https://generativelanguage.googleapis.com",
            {"api_version": (str,), "headers": (dict,)},
        ),
        ProviderType(
            "bedrock",
            None,  # https://bedrock-runtime.{region}.amazonaws.com
            # api: auto | invoke | converse; betas: extra anthropic-beta flags to let through;
            # cache_points: send cache_control as Converse cachePoint blocks
            {"region": (str,), "profile": (str,), "api": (str,), "betas": (list,), "cache_points": (bool,)},
            speaks_anthropic=True,
        ),
        ProviderType(
            "vertex",
            None,  # https://{region}-aiplatform.googleapis.com
            {"region": (str,), "project": (str,), "credentials_file": (str,), "betas": (list,)},
            speaks_anthropic=True,
        ),
    )
}


def default_base_url(ptype: str, options: dict[str, object]) -> str | None:
    """The base URL of a provider that did not name one, or None when it must."""
    t = TYPES[ptype]
    if t.default_base_url:
        return t.default_base_url
    region = options.get("region")
    if ptype == "bedrock" and isinstance(region, str):
        return f"https://bedrock-runtime.{region}.amazonaws.com"
    if ptype == "vertex" and isinstance(region, str):
        return "https://aiplatform.googleapis.com" if region == "global" else f"https://{region}-aiplatform.googleapis.com"
    return None
