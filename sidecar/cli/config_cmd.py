"""`config init|check|path|show`."""

from __future__ import annotations

import json

import click
import tomli_w

from sidecar.cli.common import context
from sidecar.config import DEFAULT_CONFIG
from sidecar.config import warnings as config_warnings
from sidecar.paths import replace_file
from sidecar.secrets import SecretStore, resolve_keys


@click.group("config")
def config() -> None:
    """Write, check and show the config file."""


@config.command()
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(force: bool) -> None:
    """Write a commented default config."""
    _, p = context()
    path = p.config_file
    if path.exists() and not force:
        raise click.ClickException(f"{path} already exists (use --force to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    replace_file(path, DEFAULT_CONFIG, mode=None)  # a running daemon may watch it
    click.echo(f"wrote {path}")


@config.command()
def check() -> None:
    """Validate the config and the credentials it names."""
    cfg, p = context()
    store = SecretStore(p.config_dir / "credentials.json")
    for prov in cfg.providers:
        keys = resolve_keys(prov, store)
        how = ", ".join(k.source for k in keys) if keys else "forwards the client's credentials"
        click.echo(f"provider {prov.name}: {prov.base_url} ({how})")
    for warning in config_warnings(cfg):
        click.secho(f"WARNING: {warning}", fg="yellow", bold=True, err=True)
    where = p.config_file if p.config_file.exists() else f"{p.config_file} (absent: defaults)"
    click.echo(f"ok: {where}")


PATH_NAMES = ("config", "database", "state", "token", "logs", "cache")


@config.command()
@click.argument("name", required=False, type=click.Choice(PATH_NAMES))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def path(name: str | None, as_json: bool) -> None:
    """Print where the config, data, state and logs live (NAME: only that path, e.g.
    `tail -f "$(claude-sidecar config path logs)"`)."""
    _, p = context()
    rows = {
        "config": p.config_file,
        "database": p.db_file,
        "state": p.state_file,
        "token": p.token_file,
        "logs": p.log_file,
        "cache": p.cache_dir,
    }
    if name is not None:
        click.echo(str(rows[name]))
        return
    if as_json:
        click.echo(json.dumps({k: str(v) for k, v in rows.items()}, indent=2))
        return
    for k, v in rows.items():
        click.echo(f"{k:<9} {v}")


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON instead of TOML.")
def show(as_json: bool) -> None:
    """Print the effective config (file, defaults and environment merged)."""
    cfg, _ = context()
    data = cfg.to_dict()
    click.echo(json.dumps(data, indent=2) if as_json else tomli_w.dumps(data))


COMMANDS = [config]
