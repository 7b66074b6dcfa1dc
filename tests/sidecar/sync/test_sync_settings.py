"""The org's `sync` settings in the policy document: org scope only, validated, and part of
the effective policy every device receives."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.central import policy_doc
from sidecar.errors import ConfigError
from sidecar.sync.policy import OrgSync


def test_the_org_may_set_sync_and_devices_receive_it() -> None:
    doc = {"sync": {"grace_hours": 24, "after_grace": "closed", "lease_usd": 2.5, "lease_ttl_seconds": 600}}
    assert policy_doc.validate(doc, "org") is doc
    effective = policy_doc.check([doc, {"budget": {"daily_usd": 5}}, {}], "team:t")
    assert effective["sync"] == doc["sync"]
    assert OrgSync.from_document(effective) == OrgSync(24.0, "closed", 2.5, 600.0)
    assert OrgSync.from_document({}) == OrgSync(72.0, "open", 5.0, 3600.0)


@pytest.mark.parametrize(
    ("doc", "scope", "message"),
    [
        ({"sync": {"grace_hours": 1}}, "team:t", "only the org"),
        ({"sync": {"grace_hours": 1}}, "developer:d", "only the org"),
        ({"sync": []}, "org", "sync must be an object"),
        ({"sync": {"grace": 1}}, "org", "unknown keys"),
        ({"sync": {"grace_hours": 0}}, "org", "sync.grace_hours"),
        ({"sync": {"grace_hours": True}}, "org", "sync.grace_hours"),
        ({"sync": {"after_grace": "maybe"}}, "org", "sync.after_grace"),
        ({"sync": {"lease_usd": -1}}, "org", "sync.lease_usd"),
        ({"sync": {"lease_ttl_seconds": 5}}, "org", "sync.lease_ttl_seconds"),
    ],
)
def test_bad_sync_settings_are_refused_naming_the_key(doc: dict[str, Any], scope: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy_doc.validate(doc, scope)
