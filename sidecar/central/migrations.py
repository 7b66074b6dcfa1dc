"""Named, append-only migrations of the central store (the same SQL on SQLite and PostgreSQL).

Never edit or reorder a migration that has shipped: add a new one at the end. Times are
UTC epoch seconds (DOUBLE PRECISION); money is US dollars as DOUBLE PRECISION; usage rows
carry their UTC day so reports group the same way on both databases.
"""

from __future__ import annotations

import time

from sidecar.central.db import Database

MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "m001_org_people_devices",
        [
            """CREATE TABLE org (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)""",
            """CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)""",
            """CREATE TABLE teams (
                id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at DOUBLE PRECISION NOT NULL)""",
            """CREATE TABLE developers (
                id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                team_id TEXT REFERENCES teams(id), created_at DOUBLE PRECISION NOT NULL)""",
            """CREATE TABLE admins (
                id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
                token_hash TEXT NOT NULL UNIQUE, created_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION)""",
            """CREATE TABLE enrollment_tokens (
                id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
                developer_id TEXT NOT NULL REFERENCES developers(id),
                created_by TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL, used_at DOUBLE PRECISION, device_id TEXT)""",
            """CREATE TABLE devices (
                id TEXT PRIMARY KEY, developer_id TEXT NOT NULL REFERENCES developers(id),
                name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
                created_at DOUBLE PRECISION NOT NULL, last_seen_at DOUBLE PRECISION,
                revoked_at DOUBLE PRECISION)""",
            """CREATE TABLE signing_keys (
                id TEXT PRIMARY KEY, private_pem TEXT NOT NULL, public_b64 TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL)""",
        ],
    ),
    (
        "m002_policy_versions",
        [
            """CREATE TABLE policy_versions (
                version BIGINT PRIMARY KEY, scope TEXT NOT NULL, document TEXT,
                created_by TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, comment TEXT)""",
            """CREATE INDEX policy_versions_scope ON policy_versions (scope, version)""",
        ],
    ),
    (
        "m003_usage",
        [
            """CREATE TABLE usage (
                id TEXT PRIMARY KEY, content_hash TEXT NOT NULL,
                device_id TEXT NOT NULL, developer_id TEXT NOT NULL, team_id TEXT,
                ts DOUBLE PRECISION NOT NULL, day TEXT NOT NULL,
                model TEXT NOT NULL, route TEXT, provider TEXT,
                input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
                cache_read_tokens BIGINT NOT NULL, cache_write_tokens BIGINT NOT NULL,
                cost_usd DOUBLE PRECISION NOT NULL, received_at DOUBLE PRECISION NOT NULL)""",
            """CREATE INDEX usage_day ON usage (day)""",
            """CREATE INDEX usage_device_ts ON usage (device_id, ts)""",
        ],
    ),
    (
        "m004_leases",
        [
            """CREATE TABLE lease_pools (
                pool TEXT NOT NULL, period TEXT NOT NULL, limit_usd DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (pool, period))""",
            """CREATE TABLE leases (
                id TEXT NOT NULL, pool TEXT NOT NULL, device_id TEXT NOT NULL, period TEXT NOT NULL,
                amount_usd DOUBLE PRECISION NOT NULL, granted_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL, closed_at DOUBLE PRECISION,
                used_usd DOUBLE PRECISION, PRIMARY KEY (id, pool))""",
            """CREATE INDEX leases_pool ON leases (pool, period)""",
        ],
    ),
    (
        "m005_audit",
        [
            """CREATE TABLE audit (
                seq BIGINT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
                request_id TEXT, data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
            """INSERT INTO counters (name, value) VALUES ('policy_version', 0)""",
            """INSERT INTO counters (name, value) VALUES ('audit_seq', 0)""",
        ],
    ),
    (
        "m006_device_status",
        [
            # What each device last reported: the policy version it enforces (or why it
            # refused the newest), its outbox backlog and when it said so.
            """ALTER TABLE devices ADD COLUMN policy_version BIGINT""",
            """ALTER TABLE devices ADD COLUMN policy_error TEXT""",
            """ALTER TABLE devices ADD COLUMN outbox_backlog BIGINT""",
            """ALTER TABLE devices ADD COLUMN reported_at DOUBLE PRECISION""",
        ],
    ),
]


async def migrate(db: Database) -> list[str]:
    """Apply the migrations this database lacks, in order; return their names."""
    applied: list[str] = []
    async with db.tx() as tx:
        if tx.dialect == "postgresql":
            # Replicas starting together: one migrates, the others wait and find it done.
            await tx.execute("SELECT pg_advisory_xact_lock(7142026)")
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        done = {r["name"] for r in await tx.fetch("SELECT name FROM schema_migrations")}
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for sql in statements:
                await tx.execute(sql)
            await tx.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", name, time.time())
            applied.append(name)
    return applied
