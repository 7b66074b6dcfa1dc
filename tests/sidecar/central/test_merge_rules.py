"""The org -> team -> developer merge, as properties over generated documents."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.central import policy_doc
from sidecar.errors import ConfigError
from sidecar.policy.config import GOVERNANCE_SECTIONS
from sidecar.policy.model import Policy

MODES = list(policy_doc.MODES)
limits = st.fixed_dictionaries(
    {}, optional={"requests_per_minute": st.integers(1, 1000), "max_concurrent": st.integers(1, 50)}
)
budget = st.fixed_dictionaries({}, optional={"daily_usd": st.integers(1, 500), "monthly_usd": st.integers(1, 5000)})
guard = st.fixed_dictionaries({}, optional={"secrets": st.sampled_from(MODES), "pii": st.sampled_from(MODES)})
models = st.lists(st.sampled_from(["claude-*", "claude-haiku-*", "claude-sonnet-*", "gpt-*"]), min_size=1, max_size=3, unique=True)
access = st.fixed_dictionaries(
    {}, optional={"models": models, "deny_models": models, "log_content": st.booleans(), "audit": st.booleans()}
)
scope_doc = st.fixed_dictionaries({}, optional={"limits": limits, "budget": budget, "guardrails": guard, "policy": access})
CEILABLE = ["budget.daily_usd", "budget.monthly_usd", "limits.requests_per_minute", "limits.max_concurrent",
            "guardrails.secrets", "guardrails.pii", "policy.models", "policy.log_content", "policy.audit"]  # fmt: skip


def _value(doc: dict[str, Any], key: str) -> tuple[bool, Any]:
    section, _, name = key.partition(".")
    table = doc.get(section, {})
    return (name in table, table.get(name))


def _tighter_or_equal(key: str, eff: Any, org: Any) -> bool:
    if key.startswith(("budget.", "limits.")):
        return bool(eff <= org)
    if key.startswith("guardrails."):
        return MODES.index(eff) >= MODES.index(org)
    if key == "policy.models":
        return set(eff) <= set(org)
    if key == "policy.log_content":
        return bool(org or not eff)
    if key == "policy.audit":
        return bool(eff or not org)
    raise AssertionError(key)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(org=scope_doc, team=scope_doc, dev=scope_doc, ceilings=st.lists(st.sampled_from(CEILABLE), unique=True))
def test_a_ceiling_is_never_loosened_and_the_result_is_a_valid_policy(
    org: dict[str, Any], team: dict[str, Any], dev: dict[str, Any], ceilings: list[str]
) -> None:
    org = {**org, "ceilings": ceilings}
    effective, problems = policy_doc.merge([org, team, dev])
    Policy.from_document({k: v for k, v in effective.items() if k in GOVERNANCE_SECTIONS})  # the sidecar can enforce it
    for key in ceilings:
        had, org_value = _value(org, key)
        if had:
            _, eff = _value(effective, key)
            assert _tighter_or_equal(key, eff, org_value), (key, org_value, eff)
    # deny lists only grow
    for key in policy_doc.DENY_KEYS:
        merged = set(_value(effective, key)[1] or [])
        for doc in (org, team, dev):
            assert set(_value(doc, key)[1] or []) <= merged
    # without loosening attempts the narrowest scope's own values win
    if not problems:
        for section in ("limits", "budget"):
            for name, value in dev.get(section, {}).items():
                assert effective[section][name] == value


def test_merge_rules_by_example() -> None:
    org = {"budget": {"daily_usd": 50}, "policy": {"models": ["claude-*"]}, "ceilings": ["budget.daily_usd"]}
    eff, problems = policy_doc.merge([org, {"budget": {"daily_usd": 80}, "policy": {"models": ["gpt-*"]}}, {}])
    assert eff["budget"]["daily_usd"] == 50 and problems == ["budget.daily_usd: 80 would loosen the org's ceiling (50)"]
    assert eff["policy"]["models"] == ["gpt-*"]  # not a ceiling: the narrower scope replaces
    with pytest.raises(ConfigError, match="ceiling"):
        policy_doc.check([org, {"budget": {"daily_usd": 80}}], "team:t")


@pytest.mark.parametrize(
    ("doc", "scope", "message"),
    [
        ({"ceilings": ["budget.daily_usd"]}, "team:t", "only the org"),
        ({"pools": {"daily_usd": 5}}, "developer:d", "not of a developer"),
        ({"pools": {"weekly_usd": 5}}, "org", "pools takes"),
        ({"providers": [{"name": "x", "type": "openai-compatible", "base_url": "http://h", "headers": {"token": "t"}}]}, "org", "secret"),
        ({"providers": [{"name": "x", "type": "openai-compatible", "base_url": "http://h", "headers": {"Authorization": "x"}}]}, "org", "secret"),
        ({"providers": [{"name": "x", "type": "openai-compatible", "base_url": "http://h", "headers": {"X-Api-Key": "x"}}]}, "org", "secret"),
        ({"providers": [{"name": "x", "type": "openai-compatible", "base_url": "http://h", "headers": {"X-Org": "sk-abc"}}]}, "org", "credential"),
    ],
)
def test_scope_rules(doc: dict[str, Any], scope: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy_doc.validate(doc, scope)


def test_provider_options_that_only_sound_like_secrets_are_accepted() -> None:
    doc = {"providers": [
        {"name": "local", "type": "openai-compatible", "base_url": "http://127.0.0.1:8000/v1", "keys": ["env:LOCAL_KEY"],
         "quirks": {"max_tokens_field": "max_completion_tokens"}, "headers": {"HTTP-Referer": "https://example.com"}},
    ]}  # fmt: skip
    assert policy_doc.validate(doc, "org") is doc
