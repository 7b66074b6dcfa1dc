"""The policy model: the governance sections of the config, and the JSON policy document."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomli_w
from click.testing import CliRunner

from sidecar.cli import cli
from sidecar.config import DEFAULT_CONFIG, parse
from sidecar.errors import ConfigError
from sidecar.policy.config import BudgetConfig, CustomGuardrail
from sidecar.policy.model import Policy

FULL = """
[usage]
timezone = "Europe/Berlin"

[budget]
daily_usd = 25
weekly_usd = 100.5
monthly_usd = 400
thresholds = [0.95, 0.5, 0.8]

[limits]
requests_per_minute = 120
input_tokens_per_minute = 400000
max_concurrent = 4
queue_seconds = 5

[guardrails]
secrets = "redact"
pii = "warn"
detectors = { email = "off", card_number = "block" }

[[guardrails.custom]]
name = "ticket-ids"
pattern = "ACME-[0-9]{6}"
mode = "block"

[tools]
allow = ["Read", "Bash", "mcp__github__*"]
deny = ["mcp__*__delete_*"]

[policy]
models = ["claude-*"]
deny_models = ["claude-opus-*"]
providers = ["anthropic"]
log_content = true
audit = true
"""


def test_full_governance_config_is_read() -> None:
    g = parse(FULL, None, {}).governance
    assert g.budget == BudgetConfig(daily_usd=25.0, weekly_usd=100.5, monthly_usd=400.0, thresholds=(0.5, 0.8, 0.95))
    assert (g.limits.requests_per_minute, g.limits.input_tokens_per_minute, g.limits.output_tokens_per_minute) == (120, 400000, None)
    assert (g.limits.max_concurrent, g.limits.queue_seconds) == (4, 5.0)
    assert (g.guardrails.secrets, g.guardrails.pii) == ("redact", "warn")
    assert g.guardrails.detectors == {"email": "off", "card_number": "block"}
    assert g.guardrails.custom == (CustomGuardrail("ticket-ids", "ACME-[0-9]{6}", "block"),)
    assert g.tools.allow == ("Read", "Bash", "mcp__github__*")
    assert g.policy.log_content is True


def test_defaults_govern_nothing() -> None:
    p = Policy.from_config(parse("", None, {}))
    assert p.budget.daily_usd is None and p.limits.requests_per_minute is None
    assert (p.guardrails.secrets, p.guardrails.pii, p.tools.allow, p.tools.deny) == ("off", "off", (), ())
    assert p.access.audit is True and p.access.log_content is False
    assert p.model_allowed("anything") and p.provider_allowed("anything")


def test_the_default_config_file_parses_with_every_commented_block_enabled() -> None:
    parse(DEFAULT_CONFIG, None, {})
    # Uncomment the governance examples: they must be a valid config as written.
    lines = DEFAULT_CONFIG.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# [budget]"))
    enabled = [re.sub(r"^# ", "", line) if i >= start and re.match(r"^# ?[\[a-z]", line) else line for i, line in enumerate(lines)]
    g = parse("\n".join(enabled), None, {}).governance
    assert g.budget.daily_usd == 25 and g.limits.max_concurrent == 8
    assert g.guardrails.custom[0].name == "ticket-ids" and g.tools.deny == ("mcp__*__delete_*",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[budget]\ndaily_usd = -1\n", r"<config>:2: budget.daily_usd: must be a positive number"),
        ("[budget]\ndaily = 5\n", r"budget.daily: unknown key \(expected one of: daily_usd, default_output_tokens"),
        ("[budget]\nthresholds = [1.5]\n", r"budget.thresholds: 1.5 is not a fraction"),
        ("[budget]\nmonthly_usd = true\n", r"budget.monthly_usd: must be an integer or a number, not a boolean"),
        ("[limits]\nrequests_per_minute = 0\n", r"limits.requests_per_minute: must be a positive number"),
        ("[limits]\nrequests_per_minute = 1.5\n", r"limits.requests_per_minute: must be an integer, not a number"),
        ("[limits]\nqueue_seconds = -2\n", r"limits.queue_seconds: must not be negative"),
        ('[guardrails]\nsecrets = "mask"\n', r"guardrails.secrets: 'mask' is not a mode \(expected one of: off, warn, redact, block\)"),
        ('[guardrails.detectors]\nssn = "block"\n', r"guardrails.detectors.ssn: unknown key"),
        ('[[guardrails.custom]]\nname = "x"\npattern = "("\n', r"guardrails.custom\[0\].pattern: not a valid regular expression"),
        ('[[guardrails.custom]]\nname = "x"\npattern = "a*"\n', r"guardrails.custom\[0\].pattern: matches the empty string"),
        ('[[guardrails.custom]]\nname = "email"\npattern = "a"\n', r"guardrails.custom\[0\].name: 'email' must be a new"),
        ('[[guardrails.custom]]\npattern = "a"\n', r"guardrails.custom\[0\]: needs a 'name' and a 'pattern'"),
        ('[tools]\ndeny = ["", "x"]\n', r"tools.deny: entry 0 \(''\) must be a non-empty string"),
        ('[policy]\nproviders = ["openai"]\n', r"policy.providers: 'openai' names no configured provider"),
        ('[policy]\nlog_content = "yes"\n', r"policy.log_content: must be a boolean, not a string"),
    ],
)
def test_bad_governance_config_names_key_line_and_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(text, None, {})


def test_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    with pytest.raises(ConfigError) as err:
        parse("[usage]\ntimezone = 'UTC'\n\n[limits]\nmax_concurrent = 0\n", path, {})
    assert str(err.value) == f"{path}:5: limits.max_concurrent: must be a positive number (leave it out for no limit)"


def test_config_show_prints_the_governance_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(FULL)
    monkeypatch.setenv("CLAUDE_SIDECAR_CONFIG", str(cfg))
    out = CliRunner().invoke(cli, ["config", "show", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["budget"]["daily_usd"] == 25.0 and "output_tokens_per_minute" not in data["limits"]
    assert data["guardrails"]["custom"] == [{"name": "ticket-ids", "pattern": "ACME-[0-9]{6}", "mode": "block"}]
    toml = CliRunner().invoke(cli, ["config", "show"])
    assert toml.exit_code == 0 and "[budget]" in toml.output
    # What `config show` prints is itself a valid config with the same governance.
    assert parse(toml.output, None, {}).governance == parse(FULL, None, {}).governance


def test_policy_document_round_trips_and_has_a_stable_digest() -> None:
    p = Policy.from_config(parse(FULL, None, {}))
    doc = p.to_document()
    assert json.loads(json.dumps(doc)) == doc
    again = Policy.from_document({**doc, "version": 3}, "central v3")
    assert again.rules == p.rules and again.version == 3 and again.source == "central v3"
    assert Policy.from_document(doc).digest == p.digest
    changed = Policy.from_document({**doc, "budget": {**doc["budget"], "daily_usd": 26}})
    assert changed.digest != p.digest


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "a policy must be a JSON object"),
        ({"version": -1}, "version must be a non-negative integer"),
        ({"budgets": {}}, r"unknown keys \['budgets'\]"),
        ({"limits": {"max_concurrent": "8"}}, "limits.max_concurrent: must be an integer, not a string"),
        ({"tools": {"deny": "WebFetch"}}, "tools.deny: must be an array, not a string"),
    ],
)
def test_a_bad_policy_document_is_refused_with_the_key(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Policy.from_document(doc, "central v9")


def test_model_rules() -> None:
    p = Policy.from_config(parse(FULL, None, {}))
    assert p.model_allowed("claude-sonnet-5") and p.model_allowed(None)
    assert not p.model_allowed("claude-opus-4-8")  # denied wins over allowed
    assert not p.model_allowed("gpt-5")
    assert p.provider_allowed("anthropic") and not p.provider_allowed("openai")


def test_toml_dump_of_the_document_is_a_config() -> None:
    doc = Policy.from_config(parse(FULL, None, {})).to_document()
    del doc["version"]
    assert parse(tomli_w.dumps(doc), None, {}).governance == parse(FULL, None, {}).governance
