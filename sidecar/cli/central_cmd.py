"""`central serve|init`: run the org's central server, or prepare its database."""

from __future__ import annotations

import asyncio

import click

from sidecar.central.server import ServeSettings, serve
from sidecar.central.serving import Options
from sidecar.central.store import open_store
from sidecar.cli.common import context


def default_db() -> str:
    """``sqlite:///`` a file in the data dir."""
    _, p = context()
    return f"sqlite:///{p.data_dir / 'central.db'}"


@click.group()
def central() -> None:
    """Run the org's central server (teams, developers, signed policy, usage, leases)."""


@central.command()
@click.option("--db", "db_url", help="sqlite:///PATH (default: central.db in the data dir) or postgresql://USER@HOST/DB")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8790, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate chain for HTTPS.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM private key for HTTPS.")
@click.option("--org-name", default="org", show_default=True, help="The org's name (first run only).")
@click.option("--max-wait", default=30.0, show_default=True, type=click.FloatRange(0, 300), help="Longest policy long-poll, seconds.")
@click.option("--enroll-per-minute", default=10.0, show_default=True, type=click.FloatRange(min=0.1), help="Enrollment attempts per client address.")
@click.option("--auth-failures-per-minute", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Failed token authentications per client address before 429s.")  # fmt: skip
def serve_cmd(
    db_url: str | None, host: str, port: int, tls_cert: str | None, tls_key: str | None, org_name: str,
    max_wait: float, enroll_per_minute: float, auth_failures_per_minute: float,
) -> None:  # fmt: skip
    """Serve the central API (prints a one-time bootstrap admin token on first run)."""
    options = Options(max_wait=max_wait, enroll_per_minute=enroll_per_minute, auth_failures_per_minute=auth_failures_per_minute)
    settings = ServeSettings(db_url or default_db(), host, port, tls_cert, tls_key, org_name, options)
    asyncio.run(serve(settings))


serve_cmd.name = "serve"


@central.command()
@click.option("--db", "db_url", help="sqlite:///PATH (default: central.db in the data dir) or postgresql://USER@HOST/DB")
@click.option("--org-name", default="org", show_default=True, help="The org's name.")
def init(db_url: str | None, org_name: str) -> None:
    """Create the database and print a one-time bootstrap admin token."""

    async def run() -> str | None:
        store = await open_store(db_url or default_db(), org_name)
        try:
            return await store.bootstrap_admin()
        finally:
            await store.db.close()

    token = asyncio.run(run())
    if token is None:
        raise click.ClickException("this database already has an admin; create more with: claude-sidecar admin admins create")
    click.echo(f"bootstrap admin token (shown once, keep it safe): {token}")


COMMANDS = [central]
