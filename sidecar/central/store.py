"""The central store: one interface over SQLite and PostgreSQL.

`Store` puts together people and credentials (`people_store`), policy versions
(`policy_store`), usage (`usage_store`) and budget leases (`lease_store`). Every method is
one transaction; every admin action is appended to the server's hash-chained audit log in
the same transaction, so an action and its audit entry are stored together or not at all.
"""

from __future__ import annotations

from sidecar.central.db import Database, connect
from sidecar.central.lease_store import LeaseStore
from sidecar.central.migrations import migrate
from sidecar.central.people_store import Admin, Device
from sidecar.central.usage_store import UsageStore

__all__ = ["Admin", "Device", "Store", "open_store"]


class Store(LeaseStore, UsageStore):
    """Every read and write of the central server."""


async def open_store(url: str, org_name: str = "org") -> Store:
    """Connect to `url`, apply pending migrations, create the org and its key when new."""
    db: Database = connect(url)
    await db.open()
    try:
        await migrate(db)
        store = Store(db)
        await store.setup(org_name)
    except BaseException:
        await db.close()
        raise
    return store
