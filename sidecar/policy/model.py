"""The policy model: what an org allows, as one versioned document.

Today the policy comes from the local config's [budget], [limits], [guardrails], [tools]
and [policy] sections. Later a central server signs and pushes the same document as JSON::

    {"version": 7, "budget": {"daily_usd": 25}, "limits": {"requests_per_minute": 120},
     "guardrails": {"secrets": "redact"}, "tools": {"deny": ["WebFetch"]},
     "policy": {"models": ["claude-*"], "log_content": false}}

Both forms go through the same validation (`sidecar.policy.config.read_governance`), so a pushed
policy is held to exactly the rules of a config file. `digest` names a policy in the audit
log: the SHA-256 of its canonical JSON.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sidecar.config import Config
from sidecar.errors import ConfigError
from sidecar.policy.config import (
    GOVERNANCE_SECTIONS,
    BudgetConfig,
    Governance,
    GuardrailsConfig,
    LimitsConfig,
    PolicyConfig,
    ToolsConfig,
    read_governance,
)


@dataclass(frozen=True)
class Policy:
    """One version of the governance rules, and where it came from."""

    rules: Governance = field(default_factory=Governance)
    version: int = 0  # 0: the local config; a central server counts from 1
    source: str = "config"

    @classmethod
    def from_config(cls, cfg: Config) -> Policy:
        """The policy of the local config file."""
        return cls(cfg.governance, 0, str(cfg.source) if cfg.source else "config")

    @classmethod
    def from_document(cls, doc: Any, source: str = "policy document") -> Policy:
        """Validate a policy document (parsed JSON); raise ConfigError naming the bad key."""
        if not isinstance(doc, dict):
            raise ConfigError(f"{source}: a policy must be a JSON object")
        unknown = set(doc) - {"version", *GOVERNANCE_SECTIONS}
        if unknown:
            raise ConfigError(f"{source}: unknown keys {sorted(unknown)} (expected version and {', '.join(GOVERNANCE_SECTIONS)})")
        version = doc.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ConfigError(f"{source}: version must be a non-negative integer")
        return cls(read_governance(doc, source), version, source)

    def to_document(self) -> dict[str, Any]:
        """The JSON form (`from_document(p.to_document())` gives `p` back)."""
        doc: dict[str, Any] = {"version": self.version}
        for name, table in asdict(self.rules).items():
            doc[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in table.items() if v is not None}
        return doc

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON document."""
        canonical = json.dumps(self.to_document(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def budget(self) -> BudgetConfig:
        """The spending limits."""
        return self.rules.budget

    @property
    def limits(self) -> LimitsConfig:
        """The rate limits."""
        return self.rules.limits

    @property
    def guardrails(self) -> GuardrailsConfig:
        """The prompt guardrails."""
        return self.rules.guardrails

    @property
    def tools(self) -> ToolsConfig:
        """The tool rules."""
        return self.rules.tools

    @property
    def access(self) -> PolicyConfig:
        """Providers, models and audit switches."""
        return self.rules.policy

    def model_allowed(self, model: str | None) -> bool:
        """Whether requests may name `model` (a request without one is left to the upstream)."""
        if model is None:
            return True
        a = self.access
        if any(fnmatch.fnmatchcase(model, g) for g in a.deny_models):
            return False
        return not a.models or any(fnmatch.fnmatchcase(model, g) for g in a.models)

    def provider_allowed(self, provider: str) -> bool:
        """Whether requests may go to the provider called `provider`."""
        globs = self.access.providers
        return not globs or any(fnmatch.fnmatchcase(provider, g) for g in globs)
