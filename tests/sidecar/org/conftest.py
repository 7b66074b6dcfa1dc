"""Fixtures of the org tests: the central server's database on SQLite and on PostgreSQL."""

from tests.sidecar.central.conftest import backend, db_url, pg_cluster

__all__ = ["backend", "db_url", "pg_cluster"]
