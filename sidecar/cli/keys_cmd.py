"""`keys set|list|rm PROVIDER`: provider credentials in the OS keyring, never printed."""

from __future__ import annotations

import json
import sys

import click

from sidecar.central.enrollment import enrollment_file
from sidecar.cli.common import context
from sidecar.config import Config
from sidecar.mcp.settings import KEYRING_PREFIX
from sidecar.secrets import SecretStore, env_var_for


def _store() -> SecretStore:
    _, p = context()
    return SecretStore(p.config_dir / "credentials.json")


def known_names(cfg: Config) -> set[str]:
    """The credential names the config uses: each provider's name and every `keyring:NAME` it refers to."""
    refs = [k for prov in cfg.providers for k in prov.keys]
    refs += [v for s in cfg.mcp.servers for v in (*s.env.values(), *s.headers.values())]
    return {prov.name for prov in cfg.providers} | {r[len(KEYRING_PREFIX):] for r in refs if r.startswith(KEYRING_PREFIX)}


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _read_key(provider: str, from_stdin: bool) -> str:
    # A key piped in (`pass show x | claude-sidecar keys set x`) is read as it comes: getpass
    # would warn that it cannot hide what is not a terminal anyway.
    if from_stdin or not _stdin_is_terminal():
        return sys.stdin.readline().strip()
    return str(click.prompt(f"API key for {provider}", hide_input=True))


@click.group()
def keys() -> None:
    """Store provider credentials (OS keyring; a 0600 file where there is none)."""


@keys.command("set")
@click.argument("provider")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the key from standard input (the default when it is not a terminal).")
@click.option("--force", is_flag=True, help="Store it even though the config does not use this name (yet).")
def set_key(provider: str, from_stdin: bool, force: bool) -> None:
    """Store the API key for PROVIDER (prompted, hidden; or piped in)."""
    cfg, p = context()
    known = known_names(cfg)
    if provider not in known and not force and enrollment_file(p).exists():
        # The org's policy may bring providers the local file does not name; it carries no keys.
        click.echo(f"warning: no provider {provider!r} in {p.config_file}; storing it for the org's policy", err=True)
    elif provider not in known and not force:
        raise click.ClickException(
            f"no provider {provider!r} is configured (configured: {', '.join(sorted(known)) or 'none'}), so the sidecar "
            f"would never use this key; add a [[providers]] entry named {provider!r} to {p.config_file} "
            f"(see `claude-sidecar config init`), or store it anyway with --force"
        )
    value = _read_key(provider, from_stdin)
    if not value:
        raise click.ClickException("an empty key was given; nothing stored")
    store = SecretStore(p.config_dir / "credentials.json")
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
