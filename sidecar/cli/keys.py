"""`keys set|list|rm PROVIDER`: provider credentials in the OS keyring, never printed."""

from __future__ import annotations

import json
import sys

import click

from sidecar.cli.common import context
from sidecar.secrets import SecretStore, env_var_for


def _store() -> SecretStore:
    _, p = context()
    return SecretStore(p.config_dir / "credentials.json")


@click.group()
def keys() -> None:
    """Store provider credentials (OS keyring; a 0600 file where there is none)."""


@keys.command("set")
@click.argument("provider")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the key from standard input.")
def set_key(provider: str, from_stdin: bool) -> None:
    """Store the API key for PROVIDER (prompted, hidden)."""
    value = sys.stdin.readline().strip() if from_stdin else click.prompt(f"API key for {provider}", hide_input=True)
    if not value:
        raise click.ClickException("an empty key was given; nothing stored")
    store = _store()
    store.set(provider, value)
    click.echo(f"stored the key for {provider} in {store.where}")
    if not store.uses_keyring:
        click.echo("warning: no OS keyring is available, so the key is in a file readable only by you", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_keys(as_json: bool) -> None:
    """List providers that have a stored key (values are never shown)."""
    store = _store()
    names = store.names()
    if as_json:
        click.echo(json.dumps({"backend": store.where, "providers": names}))
        return
    if not names:
        click.echo(f"no keys stored ({store.where})")
    for n in names:
        click.echo(f"{n}  (override with {env_var_for(n)})")


@keys.command("rm")
@click.argument("provider")
def rm_key(provider: str) -> None:
    """Remove the stored key for PROVIDER."""
    if not _store().delete(provider):
        raise click.ClickException(f"no key stored for {provider}")
    click.echo(f"removed the key for {provider}")


COMMANDS = [keys]
