"""Quirks: presets choose the defaults, the quirks table overrides them, and a bad table is a
ConfigError that names the provider and the key."""

from __future__ import annotations

import aiohttp
import pytest

from sidecar.errors import ConfigError
from sidecar.protocol.openai import PRESETS, Quirks, quirks_for, read_options
from sidecar.providers.config import ProviderConfig
from sidecar.providers.factory import build


def test_type_openai_defaults_to_the_openai_preset_and_compatible_to_generic() -> None:
    openai = quirks_for("oa", "openai", {})
    generic = quirks_for("local", "openai-compatible", {})
    assert openai.max_tokens_field == "max_completion_tokens"
    assert openai.reasoning_request == "effort"
    assert generic == Quirks()
    assert generic.max_tokens_field == "max_tokens"


@pytest.mark.parametrize(
    ("preset", "field", "value"),
    [
        ("vllm", "system_messages", "hoist"),
        ("vllm", "top_k", True),
        ("ollama", "tool_choice", "off"),
        ("openrouter", "reasoning_field", "reasoning"),
        ("openrouter", "reasoning_request", "openrouter"),
        ("deepseek", "send_reasoning", True),
        ("deepseek", "json_schema", "json_object"),
        ("groq", "reasoning_field", "reasoning"),
        ("openai", "json_schema", "strict"),
    ],
)
def test_presets_set_their_switches(preset: str, field: str, value: object) -> None:
    q = quirks_for("p", "openai-compatible", {"preset": preset})
    assert getattr(q, field) == value


def test_every_preset_builds() -> None:
    for name in PRESETS:
        assert isinstance(quirks_for("p", "openai-compatible", {"preset": name}), Quirks)


def test_the_quirks_table_overrides_the_preset() -> None:
    q = quirks_for(
        "ds",
        "openai-compatible",
        {"preset": "deepseek", "quirks": {"send_reasoning": False, "max_tokens_cap": 4096, "drop_params": ["temperature"]}},
    )
    assert q.send_reasoning is False
    assert q.cap_for("anything") == 4096
    assert q.drop_params == ("temperature",)
    assert q.system_messages == "hoist"  # the rest of the preset stays


def test_caps_are_model_globs_first_match_wins() -> None:
    q = quirks_for("p", "openai-compatible", {"quirks": {"max_tokens_cap": {"gpt-4o*": 16384, "*": 32000}}})
    assert q.cap_for("gpt-4o-mini") == 16384
    assert q.cap_for("llama-3") == 32000
    assert quirks_for("p", "openai-compatible", {}).cap_for("llama-3") is None


def test_reasoning_models_limit_the_reasoning_parameter() -> None:
    q = quirks_for("oa", "openai", {})
    assert q.reasoning_for("gpt-5-mini")
    assert q.reasoning_for("o3")
    assert not q.reasoning_for("gpt-4o")
    assert not quirks_for("p", "openai-compatible", {}).reasoning_for("gpt-5")  # reasoning_request none


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preset": "azure"}, "provider 'p': preset 'azure' is unknown"),
        ({"quirks": {"tool_idz": "keep"}}, "provider 'p': quirks.tool_idz is not a known quirk"),
        ({"quirks": {"tool_ids": "short"}}, "provider 'p': quirks.tool_ids: 'short' is not one of keep, sanitize, mistral"),
        ({"quirks": {"include_usage": "yes"}}, "provider 'p': quirks.include_usage: must be true or false"),
        ({"quirks": {"tool_id_max_length": 0}}, "provider 'p': quirks.tool_id_max_length: must be a positive integer"),
        ({"quirks": {"max_tokens_cap": {"gpt*": -1}}}, "provider 'p': quirks.max_tokens_cap: the cap for 'gpt*' must be a positive integer"),
        ({"quirks": {"max_tokens_cap": "lots"}}, "provider 'p': quirks.max_tokens_cap: must be a positive integer or a table"),
        ({"quirks": {"drop_params": "temperature"}}, "provider 'p': quirks.drop_params: must be a list of non-empty strings"),
        ({"quirks": {"reasoning_field": "thoughts"}}, "provider 'p': quirks.reasoning_field: 'thoughts' is not one of"),
        ({"headers": {"Authorization": "Bearer x"}}, "provider 'p': headers: Authorization is set by the sidecar"),
        ({"headers": {"X-Title": 3}}, "provider 'p': headers: the value of X-Title must be a one-line string"),
        ({"headers": {"bad name": "x"}}, "provider 'p': headers: 'bad name' is not a valid header name"),
    ],
)
def test_bad_options_are_refused_with_the_provider_and_key(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        read_options("p", "openai-compatible", options)
    assert message in str(err.value)


def test_extra_headers_are_kept_in_order() -> None:
    opts = read_options("or", "openai-compatible", {"headers": {"HTTP-Referer": "https://example.test", "X-Title": "sidecar"}})
    assert opts.headers == (("HTTP-Referer", "https://example.test"), ("X-Title", "sidecar"))


async def test_the_adapter_refuses_a_bad_quirks_table_when_it_is_built() -> None:
    cfg = ProviderConfig("local", "openai-compatible", "http://127.0.0.1:9/v1", options={"quirks": {"tool_ids": "x"}})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match=r"provider 'local': quirks.tool_ids"):
            build(cfg, [], session)
