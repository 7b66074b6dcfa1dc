"""People and credentials: org, teams, developers, admins, enrollment, devices, the audit chain.

Policy versions, usage and leases are in `policy_store`, `usage_store` and `lease_store`;
`Store` puts them together. Every method is one transaction, and every admin action is
appended to the server's hash-chained audit log inside the same transaction, so an action
and its audit entry are stored together or not at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sidecar.audit.chain import GENESIS, Entry
from sidecar.central import tokens
from sidecar.central.db import Database, Row, Tx
from sidecar.central.errors import Conflict
from sidecar.central.signing import SigningKey
from sidecar.errors import AuthenticationFailed, InvalidRequest, NotFound

ROLES = ("admin", "viewer")


@dataclass(frozen=True)
class Admin:
    """An authenticated admin user."""

    id: str
    name: str
    role: str


@dataclass(frozen=True)
class Device:
    """An authenticated, enrolled device and whose it is."""

    id: str
    name: str
    developer_id: str
    team_id: str | None


async def _serialise(tx: Tx) -> None:
    """Hold the store-wide setup lock until the transaction ends (replicas starting together;
    SQLite's BEGIN IMMEDIATE already serialises)."""
    if tx.dialect == "postgresql":
        await tx.execute("SELECT pg_advisory_xact_lock(7142026)")


class BaseStore:
    """People, credentials and the audit chain."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._key: SigningKey | None = None

    # ------------------------------------------------------------------ setup and keys

    async def setup(self, org_name: str = "org") -> None:
        """Create the org row and the signing key when the database is new."""
        async with self.db.tx() as tx:
            await _serialise(tx)
            if await tx.fetchone("SELECT id FROM org") is None:
                await tx.execute("INSERT INTO org (id, name, created_at) VALUES ('org', ?, ?)", org_name, time.time())
            if await tx.fetchone("SELECT id FROM signing_keys") is None:
                key = SigningKey.generate()
                await tx.execute(
                    "INSERT INTO signing_keys (id, private_pem, public_b64, created_at) VALUES (?, ?, ?, ?)",
                    key.key_id, key.to_pem(), key.public_b64, time.time(),
                )  # fmt: skip

    async def signing_key(self) -> SigningKey:
        """The policy-signing key (one per org; every replica reads the same)."""
        if self._key is None:
            async with self.db.tx() as tx:
                row = await tx.fetchone("SELECT private_pem FROM signing_keys ORDER BY created_at LIMIT 1")
            if row is None:
                raise RuntimeError("the store has no signing key: run setup() first")
            self._key = SigningKey.from_pem(row["private_pem"])
        return self._key

    async def bootstrap_admin(self, name: str = "bootstrap") -> str | None:
        """A first admin token when the store has no admin yet (None when it has one)."""
        async with self.db.tx() as tx:
            await _serialise(tx)
            if await tx.fetchone("SELECT id FROM admins WHERE revoked_at IS NULL"):
                return None
            token = await self._insert_admin(tx, name, "admin")
            await self.audit(tx, "central", "admin.bootstrap", {"name": name})
        return token

    async def _insert_admin(self, tx: Tx, name: str, role: str) -> str:
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
        if await tx.fetchone("SELECT id FROM admins WHERE name = ?", name):
            raise Conflict(f"an admin called {name!r} exists")
        token = tokens.new_token(tokens.ADMIN)
        await tx.execute(
            "INSERT INTO admins (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            tokens.new_id("adm_"), name, role, tokens.hash_token(token), time.time(),
        )  # fmt: skip
        return token

    # -------------------------------------------------------------------- authentication

    async def admin_for(self, token: str) -> Admin:
        """The admin whose token this is; AuthenticationFailed otherwise."""
        if not token.startswith(tokens.ADMIN):
            raise AuthenticationFailed("this endpoint needs an admin token (csa_...)")
        digest = tokens.hash_token(token)
        async with self.db.tx() as tx:
            row = await tx.fetchone("SELECT id, name, role, token_hash FROM admins WHERE token_hash = ? AND revoked_at IS NULL", digest)
        if row is None or not tokens.matches(token, row["token_hash"]):
            raise AuthenticationFailed("unknown or revoked admin token")
        return Admin(row["id"], row["name"], row["role"])

    async def device_for(self, token: str) -> Device:
        """The enrolled device whose credential this is; AuthenticationFailed otherwise."""
        if not token.startswith(tokens.DEVICE):
            raise AuthenticationFailed("this endpoint needs a device credential (csd_...): run claude-sidecar enroll")
        digest = tokens.hash_token(token)
        async with self.db.tx() as tx:
            row = await tx.fetchone(
                "SELECT d.id, d.name, d.developer_id, d.token_hash, p.team_id FROM devices d"
                " JOIN developers p ON p.id = d.developer_id WHERE d.token_hash = ? AND d.revoked_at IS NULL",
                digest,
            )
            if row is not None:  # at most once a minute: most calls stay read-only
                now = time.time()
                await tx.execute(
                    "UPDATE devices SET last_seen_at = ? WHERE id = ? AND (last_seen_at IS NULL OR last_seen_at < ?)",
                    now, row["id"], now - 60,
                )  # fmt: skip
        if row is None or not tokens.matches(token, row["token_hash"]):
            raise AuthenticationFailed("unknown or revoked device credential: enroll this sidecar again")
        return Device(row["id"], row["name"], row["developer_id"], row["team_id"])

    # --------------------------------------------------------------------------- audit

    async def audit(self, tx: Tx, actor: str, kind: str, data: dict[str, Any]) -> Entry:
        """Append one entry to the server's hash chain (inside the caller's transaction)."""
        seq = await tx.fetchval("UPDATE counters SET value = value + 1 WHERE name = 'audit_seq' RETURNING value")
        prev = await tx.fetchval("SELECT hash FROM audit WHERE seq = ?", seq - 1) if seq > 1 else GENESIS
        entry = Entry.make(int(seq), time.time(), kind, None, {"actor": actor, **data}, prev or GENESIS)
        await tx.execute(
            "INSERT INTO audit (seq, ts, kind, request_id, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            entry.seq, entry.ts, entry.kind, entry.request_id, entry.data, entry.prev_hash, entry.hash,
        )  # fmt: skip
        return entry

    async def audit_entries(self, after: int = 0, limit: int = 1000) -> list[Entry]:
        """Audit entries with seq > `after`, oldest first."""
        async with self.db.tx() as tx:
            rows = await tx.fetch("SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", after, limit)
        return [Entry(r["seq"], r["ts"], r["kind"], r["request_id"], r["data"], r["prev_hash"], r["hash"]) for r in rows]

    # ---------------------------------------------------------------- admins and people

    async def create_admin(self, actor: Admin, name: str, role: str) -> str:
        """A new admin user; returns the token (shown once)."""
        async with self.db.tx() as tx:
            token = await self._insert_admin(tx, name, role)
            await self.audit(tx, actor.name, "admin.create", {"name": name, "role": role})
        return token

    async def list_admins(self) -> list[Row]:
        """Every admin user (never a token)."""
        async with self.db.tx() as tx:
            return await tx.fetch("SELECT id, name, role, created_at, revoked_at FROM admins ORDER BY created_at")

    async def revoke_admin(self, actor: Admin, name: str) -> None:
        """Revoke an admin's token at once."""
        async with self.db.tx() as tx:
            row = await tx.fetchone("SELECT id FROM admins WHERE name = ? AND revoked_at IS NULL", name)
            if row is None:
                raise NotFound(f"no active admin called {name!r}")
            await tx.execute("UPDATE admins SET revoked_at = ? WHERE id = ?", time.time(), row["id"])
            await self.audit(tx, actor.name, "admin.revoke", {"name": name})

    async def create_team(self, actor: Admin, name: str) -> Row:
        """A new team."""
        if not name.strip():
            raise InvalidRequest("a team needs a name")
        async with self.db.tx() as tx:
            if await tx.fetchone("SELECT id FROM teams WHERE name = ?", name):
                raise Conflict(f"a team called {name!r} exists")
            row = {"id": tokens.new_id("team_"), "name": name, "created_at": time.time()}
            await tx.execute("INSERT INTO teams (id, name, created_at) VALUES (?, ?, ?)", row["id"], name, row["created_at"])
            await self.audit(tx, actor.name, "team.create", {"team": row["id"], "name": name})
        return row

    async def list_teams(self) -> list[Row]:
        """Every team with its developer count."""
        async with self.db.tx() as tx:
            return await tx.fetch(
                "SELECT t.id, t.name, t.created_at, COUNT(d.id) AS developers FROM teams t"
                " LEFT JOIN developers d ON d.team_id = t.id GROUP BY t.id, t.name, t.created_at ORDER BY t.name"
            )

    async def team_id(self, tx: Tx, ref: str) -> str:
        """A team's id from its id or name."""
        row = await tx.fetchone("SELECT id FROM teams WHERE id = ? OR name = ?", ref, ref)
        if row is None:
            raise NotFound(f"no team {ref!r}")
        return str(row["id"])

    async def developer_id(self, tx: Tx, ref: str) -> str:
        """A developer's id from their id or email."""
        row = await tx.fetchone("SELECT id FROM developers WHERE id = ? OR email = ?", ref, ref)
        if row is None:
            raise NotFound(f"no developer {ref!r}")
        return str(row["id"])

    async def create_developer(self, actor: Admin, email: str, name: str | None, team: str | None) -> Row:
        """A new developer, optionally in a team."""
        if "@" not in email:
            raise InvalidRequest("a developer needs an email address")
        async with self.db.tx() as tx:
            if await tx.fetchone("SELECT id FROM developers WHERE email = ?", email):
                raise Conflict(f"a developer {email!r} exists")
            team_id = await self.team_id(tx, team) if team else None
            row = {"id": tokens.new_id("dev_"), "email": email, "name": name or email, "team_id": team_id, "created_at": time.time()}
            await tx.execute(
                "INSERT INTO developers (id, email, name, team_id, created_at) VALUES (?, ?, ?, ?, ?)",
                row["id"], email, row["name"], team_id, row["created_at"],
            )  # fmt: skip
            await self.audit(tx, actor.name, "developer.create", {"developer": row["id"], "email": email, "team": team_id})
        return row

    async def list_developers(self) -> list[Row]:
        """Every developer with their team's name and active device count."""
        async with self.db.tx() as tx:
            return await tx.fetch(
                "SELECT p.id, p.email, p.name, p.team_id, t.name AS team, p.created_at,"
                " (SELECT COUNT(*) FROM devices d WHERE d.developer_id = p.id AND d.revoked_at IS NULL) AS devices"
                " FROM developers p LEFT JOIN teams t ON t.id = p.team_id ORDER BY p.email"
            )

    # ---------------------------------------------------------------- enrollment, devices

    async def create_enrollment(self, actor: Admin, developer: str, ttl_seconds: float) -> Row:
        """A one-time enrollment token for a developer, valid for `ttl_seconds`."""
        if not 0 < ttl_seconds <= 30 * 86400:
            raise InvalidRequest("ttl_seconds must be between 1 second and 30 days")
        token = tokens.new_token(tokens.ENROLLMENT)
        now = time.time()
        async with self.db.tx() as tx:
            dev_id = await self.developer_id(tx, developer)
            row = {"id": tokens.new_id("enr_"), "developer_id": dev_id, "expires_at": now + ttl_seconds}
            await tx.execute(
                "INSERT INTO enrollment_tokens (id, token_hash, developer_id, created_by, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row["id"], tokens.hash_token(token), dev_id, actor.name, now, row["expires_at"],
            )  # fmt: skip
            await self.audit(tx, actor.name, "enrollment.create", {"enrollment": row["id"], "developer": dev_id})
        return {**row, "token": token}

    async def list_enrollments(self) -> list[Row]:
        """Enrollment tokens not used and not expired (never the token itself)."""
        async with self.db.tx() as tx:
            return await tx.fetch(
                "SELECT e.id, e.developer_id, p.email, e.created_by, e.created_at, e.expires_at FROM enrollment_tokens e"
                " JOIN developers p ON p.id = e.developer_id WHERE e.used_at IS NULL AND e.expires_at > ? ORDER BY e.created_at",
                time.time(),
            )

    async def revoke_enrollment(self, actor: Admin, enrollment_id: str) -> None:
        """Make an outstanding enrollment token unusable (it expires now)."""
        now = time.time()
        async with self.db.tx() as tx:
            row = await tx.fetchone(
                "UPDATE enrollment_tokens SET expires_at = ? WHERE id = ? AND used_at IS NULL AND expires_at > ? RETURNING id",
                now, enrollment_id, now,
            )  # fmt: skip
            if row is None:
                raise NotFound(f"no outstanding enrollment token {enrollment_id!r}")
            await self.audit(tx, actor.name, "enrollment.revoke", {"enrollment": enrollment_id})

    async def enroll(self, token: str, device_name: str) -> tuple[Device, str]:
        """Exchange a one-time enrollment token for a device and its credential (shown once).

        The token is claimed by one conditional UPDATE, so two concurrent uses cannot both win."""
        if not token.startswith(tokens.ENROLLMENT):
            raise AuthenticationFailed("not an enrollment token (cse_...)")
        now = time.time()
        device_id, credential = tokens.new_id("dvc_"), tokens.new_token(tokens.DEVICE)
        async with self.db.tx() as tx:
            row = await tx.fetchone(
                "UPDATE enrollment_tokens SET used_at = ?, device_id = ?"
                " WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING developer_id",
                now, device_id, tokens.hash_token(token), now,
            )  # fmt: skip
            if row is None:
                raise AuthenticationFailed("the enrollment token is unknown, used or expired: ask your admin for a new one")
            dev = await tx.fetchone("SELECT team_id FROM developers WHERE id = ?", row["developer_id"])
            await tx.execute(
                "INSERT INTO devices (id, developer_id, name, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                device_id, row["developer_id"], device_name, tokens.hash_token(credential), now,
            )  # fmt: skip
            await self.audit(tx, "device:" + device_id, "device.enroll", {"device": device_id, "developer": row["developer_id"]})
        return Device(device_id, device_name, row["developer_id"], dev["team_id"] if dev else None), credential

    async def list_devices(self) -> list[Row]:
        """Every device with its developer."""
        async with self.db.tx() as tx:
            return await tx.fetch(
                "SELECT d.id, d.name, d.developer_id, p.email, d.created_at, d.last_seen_at, d.revoked_at,"
                " d.policy_version, d.policy_error, d.outbox_backlog, d.reported_at"
                " FROM devices d JOIN developers p ON p.id = d.developer_id ORDER BY d.created_at"
            )

    async def report_status(self, device: Device, fields: dict[str, Any]) -> None:
        """Record what `device` says (only the fields it sent): the policy version it
        enforces or why it refused the newest (policy_version, policy_error), its usage
        backlog (outbox_backlog)."""
        cols = [c for c in ("policy_version", "policy_error", "outbox_backlog") if c in fields]
        sets = "".join(f"{c} = ?, " for c in cols)
        async with self.db.tx() as tx:
            await tx.execute(
                f"UPDATE devices SET {sets}reported_at = ? WHERE id = ?", *(fields[c] for c in cols), time.time(), device.id
            )

    async def revoke_device(self, actor: Admin | Device, device_id: str) -> None:
        """Revoke a device: its next call is refused."""
        who = actor.name if isinstance(actor, Admin) else "device:" + actor.id
        async with self.db.tx() as tx:
            row = await tx.fetchone("SELECT id FROM devices WHERE id = ? AND revoked_at IS NULL", device_id)
            if row is None:
                raise NotFound(f"no active device {device_id!r}")
            await tx.execute("UPDATE devices SET revoked_at = ? WHERE id = ?", time.time(), device_id)
            await self.audit(tx, who, "device.revoke", {"device": device_id})
