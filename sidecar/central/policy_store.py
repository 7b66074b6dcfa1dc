"""Policy versions: every push is a new, global version; history is kept; rollback re-pushes.

Versions come from one counter row (`counters.policy_version`), incremented inside the
pushing transaction: the row lock orders concurrent pushes, so versions commit in order and
a long-poller that saw version N never later finds a new version below N.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sidecar.central import policy_doc
from sidecar.central.db import Row, Tx
from sidecar.central.people_store import Admin, BaseStore, Device
from sidecar.errors import ConfigError, InvalidRequest, NotFound

CHANNEL = "sidecar_policy"


class PolicyStore(BaseStore):
    """Scoped documents, their versions, and each device's effective signed policy."""

    async def _scope_exists(self, tx: Tx, scope: str) -> str:
        """The canonical scope string (team and developer named by id), or NotFound."""
        try:
            kind, ref = policy_doc.parse_scope(scope)
        except ConfigError as e:
            raise InvalidRequest(e.message) from None
        if kind == "team" and ref:
            return "team:" + await self.team_id(tx, ref)
        if kind == "developer" and ref:
            return "developer:" + await self.developer_id(tx, ref)
        return "org"

    async def _doc(self, tx: Tx, scope: str) -> dict[str, Any]:
        row = await tx.fetchone("SELECT document FROM policy_versions WHERE scope = ? ORDER BY version DESC LIMIT 1", scope)
        return json.loads(row["document"]) if row and row["document"] else {}

    async def _chain(self, tx: Tx, scope: str, replace: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The documents [org, team, developer] down to `scope`, `replace` standing in for it."""
        kind, ident = policy_doc.parse_scope(scope)
        scopes = ["org"]
        if kind == "team":
            scopes.append(scope)
        elif kind == "developer":
            team = await tx.fetchval("SELECT team_id FROM developers WHERE id = ?", ident)
            scopes += ([f"team:{team}"] if team else []) + [scope]
        docs = [await self._doc(tx, s) for s in scopes]
        if replace is not None:
            docs[-1] = replace
        return docs

    async def current_version(self) -> int:
        """The newest policy version (0 before any push)."""
        async with self.db.tx() as tx:
            return int(await tx.fetchval("SELECT value FROM counters WHERE name = 'policy_version'"))

    async def push_policy(self, actor: Admin, scope: str, doc: Any, comment: str | None = None) -> int:
        """Validate and store `doc` as the new document of `scope`; return the new version."""
        async with self.db.tx() as tx:
            scope = await self._scope_exists(tx, scope)
            return await self._push(tx, actor, scope, doc, comment, "policy.push")

    async def _push(self, tx: Tx, actor: Admin, scope: str, doc: Any, comment: str | None, kind: str) -> int:
        try:
            if doc is not None:
                policy_doc.validate(doc, scope)
            await self._check_affected(tx, scope, doc or {})
        except ConfigError as e:
            raise InvalidRequest(e.message) from None
        version = await self._new_version(tx)
        await tx.execute(
            "INSERT INTO policy_versions (version, scope, document, created_by, created_at, comment) VALUES (?, ?, ?, ?, ?, ?)",
            version, scope, None if doc is None else json.dumps(doc, sort_keys=True), actor.name, time.time(), comment,
        )  # fmt: skip
        await self.audit(tx, actor.name, kind, {"scope": scope, "version": version, "comment": comment})
        return version

    async def _new_version(self, tx: Tx) -> int:
        """The next policy version, announced to every replica when `tx` commits."""
        version = int(await tx.fetchval("UPDATE counters SET value = value + 1 WHERE name = 'policy_version' RETURNING value"))
        if tx.dialect == "postgresql":
            await tx.execute("SELECT pg_notify(?, ?)", CHANNEL, str(version))  # sent at commit
        return version

    async def move_developer(self, actor: Admin, developer: str, team: str | None) -> Row:
        """Put a developer in another team (or none): their effective policy changes, so
        this is a new policy version too."""
        async with self.db.tx() as tx:
            dev_id = await self.developer_id(tx, developer)
            team_id = await self.team_id(tx, team) if team else None
            await tx.execute("UPDATE developers SET team_id = ? WHERE id = ?", team_id, dev_id)
            try:
                policy_doc.check(await self._chain(tx, "developer:" + dev_id), "developer:" + dev_id, ceilings=False)
            except ConfigError as e:
                raise InvalidRequest(e.message) from None
            version = await self._new_version(tx)
            await self.audit(tx, actor.name, "developer.move", {"developer": dev_id, "team": team_id, "version": version})
        return {"id": dev_id, "team_id": team_id, "version": version}

    async def _check_affected(self, tx: Tx, scope: str, doc: dict[str, Any]) -> None:
        """The new document must combine validly with every narrower scope stored under it."""
        kind, ident = policy_doc.parse_scope(scope)
        policy_doc.check(await self._chain(tx, scope, doc), scope)
        narrower: list[str] = []
        if kind == "org":
            narrower = [r["scope"] for r in await tx.fetch("SELECT DISTINCT scope FROM policy_versions WHERE scope <> 'org'")]
        elif kind == "team":
            narrower = [
                "developer:" + r["id"] for r in await tx.fetch("SELECT id FROM developers WHERE team_id = ?", ident)
            ]
        for s in narrower:
            chain = await self._chain(tx, s)
            index = 0 if kind == "org" else 1
            if len(chain) > index:
                chain[index] = doc
            policy_doc.check(chain, s, ceilings=False)

    async def rollback(self, actor: Admin, scope: str, version: int) -> int:
        """Make the document `scope` had at `version` current again, as a new version."""
        async with self.db.tx() as tx:
            scope = await self._scope_exists(tx, scope)
            row = await tx.fetchone("SELECT document FROM policy_versions WHERE scope = ? AND version = ?", scope, version)
            if row is None:
                raise NotFound(f"{scope} has no version {version}")
            doc = json.loads(row["document"]) if row["document"] else None
            return await self._push(tx, actor, scope, doc, f"rollback to {version}", "policy.rollback")

    async def show_policy(self, scope: str, version: int | None = None) -> Row:
        """A scope's document (latest, or as of `version`) and the effective merge down to it."""
        async with self.db.tx() as tx:
            scope = await self._scope_exists(tx, scope)
            row = await tx.fetchone(
                "SELECT version, document, created_by, created_at, comment FROM policy_versions"
                " WHERE scope = ? AND version <= ? ORDER BY version DESC LIMIT 1",
                scope, version if version is not None else 2**62,
            )  # fmt: skip
            effective, _ = policy_doc.merge(await self._chain(tx, scope))
        doc = json.loads(row["document"]) if row and row["document"] else {}
        return {"scope": scope, "version": row["version"] if row else 0, "document": doc, "effective": effective,
                "created_by": row["created_by"] if row else None, "created_at": row["created_at"] if row else None}  # fmt: skip

    async def history(self, scope: str | None = None, limit: int = 100) -> list[Row]:
        """Versions, newest first (of one scope, or of all)."""
        async with self.db.tx() as tx:
            if scope:
                scope = await self._scope_exists(tx, scope)
                rows = await tx.fetch(
                    "SELECT version, scope, created_by, created_at, comment FROM policy_versions"
                    " WHERE scope = ? ORDER BY version DESC LIMIT ?", scope, limit,
                )  # fmt: skip
            else:
                rows = await tx.fetch(
                    "SELECT version, scope, created_by, created_at, comment FROM policy_versions ORDER BY version DESC LIMIT ?",
                    limit,
                )
        return rows

    async def device_policy(self, device: Device) -> tuple[int, dict[str, Any]]:
        """The current version and the signed effective policy for `device` at it."""
        async with self.db.tx() as tx:
            version = int(await tx.fetchval("SELECT value FROM counters WHERE name = 'policy_version'"))
            effective, _ = policy_doc.merge(await self._chain(tx, "developer:" + device.developer_id))
        key = await self.signing_key()
        payload = {"device_id": device.id, "version": version, "issued_at": time.time(), "policy": effective}
        return version, key.sign(payload)
