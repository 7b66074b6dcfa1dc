"""The central policy over the local config: org-set keys can only be tightened locally,
keys the org leaves out stay local, org routes and providers replace the local ones."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import config as config_mod
from sidecar.config import Config
from sidecar.errors import ConfigError
from sidecar.policy.config import GOVERNANCE_SECTIONS, Governance, read_governance
from sidecar.policy.detectors import DETECTORS
from sidecar.sync import merge
from sidecar.sync.policy import CentralPolicy

MODES = ["off", "warn", "redact", "block"]
GLOBS = ["claude-*", "claude-haiku-*", "claude-sonnet-*", "gpt-*", "Bash", "WebFetch", "mcp__*"]
DETECTOR_NAMES = ["aws_access_key", "github_token", "email", "phone"]

globs = st.lists(st.sampled_from(GLOBS), max_size=3, unique=True)
budget = st.fixed_dictionaries(
    {}, optional={"daily_usd": st.integers(1, 500), "weekly_usd": st.integers(1, 900), "monthly_usd": st.integers(1, 5000),
                  "thresholds": st.just([0.5]), "default_output_tokens": st.integers(1, 9000)},
)  # fmt: skip
limits = st.fixed_dictionaries(
    {}, optional={"requests_per_minute": st.integers(1, 1000), "input_tokens_per_minute": st.integers(1, 10**6),
                  "max_concurrent": st.integers(1, 50), "queue_seconds": st.integers(1, 60)},
)  # fmt: skip
custom = st.lists(
    st.builds(lambda n, m: {"name": n, "pattern": "ticket-[0-9]+", "mode": m}, st.sampled_from(["ticket", "codename"]), st.sampled_from(MODES)),
    max_size=2, unique_by=lambda c: c["name"],
)  # fmt: skip
guardrails = st.fixed_dictionaries(
    {}, optional={"secrets": st.sampled_from(MODES), "pii": st.sampled_from(MODES),
                  "detectors": st.dictionaries(st.sampled_from(DETECTOR_NAMES), st.sampled_from(MODES), max_size=3),
                  "custom": custom},
)  # fmt: skip
tools = st.fixed_dictionaries({}, optional={"allow": globs, "deny": globs})
access = st.fixed_dictionaries(
    {}, optional={"models": globs, "deny_models": globs, "log_content": st.booleans(), "audit": st.booleans(),
                  "providers": st.lists(st.sampled_from(["anthropic", "corp", "bedrock-*"]), max_size=2, unique=True)},
)  # fmt: skip
documents = st.fixed_dictionaries(
    {}, optional={"budget": budget, "limits": limits, "guardrails": guardrails, "tools": tools, "policy": access}
)


def central(doc: dict[str, Any], version: int = 3) -> CentralPolicy:
    return CentralPolicy(version, 1.0, doc, {}, 1.0)


def mode_of(g: Any, name: str) -> str:
    return str(g.detectors.get(name) or (g.secrets if DETECTORS[name].kind == "secret" else g.pii))


def assert_not_looser(org_doc: dict[str, Any], org: Governance, eff: Governance) -> None:
    """Every key `org_doc` sets is at least as strict in `eff` as the org has it."""
    for section, table in org_doc.items():
        for name in table:
            key, want, got = f"{section}.{name}", getattr(getattr(org, section), name), getattr(getattr(eff, section), name)
            if key in ("guardrails.detectors", "guardrails.secrets", "guardrails.pii", "guardrails.custom"):
                continue  # per detector below
            if section in ("budget", "limits") and name not in ("thresholds", "default_output_tokens", "queue_seconds"):
                assert got is not None and got <= want, (key, got, want)
            elif key in ("policy.models", "policy.providers", "tools.allow"):
                assert not want or (got and set(got) <= set(want)), (key, got, want)
            elif key in ("policy.deny_models", "tools.deny"):
                assert set(want) <= set(got), (key, got, want)
            elif key == "policy.log_content":
                assert want or not got, (key, got, want)
            elif key == "policy.audit":
                assert got or not want, (key, got, want)
            else:
                assert got == want, (key, got, want)
    g = org_doc.get("guardrails", {})
    for name, d in DETECTORS.items():
        family = "secrets" if d.kind == "secret" else "pii"
        if name in g.get("detectors", {}) or family in g:
            assert MODES.index(mode_of(eff.guardrails, name)) >= MODES.index(mode_of(org.guardrails, name)), name
    for c in org.guardrails.custom:
        [mine] = [x for x in eff.guardrails.custom if x.name == c.name]
        assert (mine.pattern, MODES.index(mine.mode) >= MODES.index(c.mode)) == (c.pattern, True)


@settings(max_examples=300, deadline=None)
@given(org_doc=documents, local_doc=documents)
def test_no_local_config_loosens_an_org_set_key(org_doc: dict[str, Any], local_doc: dict[str, Any]) -> None:
    local = Config(governance=read_governance(local_doc))
    org = read_governance(org_doc)
    eff, policy = merge.overlay(local, central(org_doc))
    assert policy.rules == eff.governance and (policy.version, policy.source) == (3, "central v3")
    assert_not_looser(org_doc, org, eff.governance)
    # keys the org leaves out stay local
    for section in GOVERNANCE_SECTIONS:
        for f in dataclasses.fields(getattr(local.governance, section)):
            if f.name not in org_doc.get(section, {}) and section != "guardrails":
                assert getattr(getattr(eff.governance, section), f.name) == getattr(getattr(local.governance, section), f.name)
    # the effective governance is a valid policy (the gate builds from it)
    read_governance(_as_doc(eff.governance))


def _as_doc(g: Governance) -> dict[str, Any]:
    from sidecar.policy.model import Policy

    doc = Policy(g).to_document()
    doc.pop("version")
    doc["guardrails"]["custom"] = [dataclasses.asdict(c) for c in g.guardrails.custom]
    return doc


def test_precedence_by_example() -> None:
    local = Config(governance=read_governance({
        "budget": {"daily_usd": 80, "weekly_usd": 100},
        "guardrails": {"secrets": "warn", "detectors": {"github_token": "off", "email": "block"}},
        "policy": {"models": ["claude-haiku-*"], "deny_models": ["gpt-*"], "log_content": True},
        "tools": {"deny": ["Bash"]},
    }))  # fmt: skip
    org = {
        "budget": {"daily_usd": 50},
        "guardrails": {"secrets": "redact"},
        "policy": {"models": ["claude-*"], "deny_models": ["claude-opus-*"], "log_content": True, "audit": True},
    }
    eff, _ = merge.overlay(local, central(org))
    g = eff.governance
    assert (g.budget.daily_usd, g.budget.weekly_usd) == (50, 100)  # org limit wins; weekly is local
    assert mode_of(g.guardrails, "github_token") == "redact"  # a local "off" cannot lower the org's secrets mode
    assert mode_of(g.guardrails, "aws_access_key") == "redact" and mode_of(g.guardrails, "email") == "block"
    assert g.policy.models == ("claude-*",)  # a local entry outside the org's list is not kept
    assert set(g.policy.deny_models) == {"claude-opus-*", "gpt-*"}
    assert g.tools.deny == ("Bash",)  # the org sets no tool rules
    assert merge.overlay(local, None) == (local, merge.Policy.from_config(local))


def test_org_routes_and_providers_replace_the_local_ones() -> None:
    local = config_mod.parse(
        '[[providers]]\nname = "mine"\ntype = "anthropic"\nbase_url = "http://127.0.0.1:9"\nkeys = ["keyring:mine"]\n\n'
        '[[routes]]\nname = "all"\ntargets = [{provider = "mine"}]\n',
        env={},
    )
    org_providers = [{"name": "corp", "type": "anthropic", "base_url": "http://127.0.0.1:8", "keys": ["keyring:corp"]}]
    eff, _ = merge.overlay(local, central({"providers": org_providers}))
    assert [p.name for p in eff.providers] == ["corp"] and eff.providers[0].keys == ("keyring:corp",)
    assert eff.routes == ()  # the local route names a provider the org replaced
    eff, _ = merge.overlay(local, central({"routes": [{"name": "org", "targets": [{"provider": "mine", "model": "claude-haiku-4-5"}]}]}))
    assert [p.name for p in eff.providers] == ["mine"] and [r.name for r in eff.routes] == ["org"]
    with pytest.raises(ConfigError, match="central v3"):
        merge.overlay(local, central({"routes": [{"name": "x", "targets": [{"provider": "nowhere"}]}]}))
