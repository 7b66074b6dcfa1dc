"""`admin ...`: manage an org's central server through its admin HTTP API (and nothing else).

The server and token come from --url/--token, else CLAUDE_SIDECAR_CENTRAL_URL /
CLAUDE_SIDECAR_ADMIN_TOKEN, else what `admin login` stored (the token in the keyring).
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from sidecar.audit.chain import Entry
from sidecar.audit.verify import verify as verify_chain
from sidecar.central.client import CentralClient
from sidecar.cli.common import context
from sidecar.secrets import SecretStore
from sidecar.text import shown

TOKEN_NAME = "central-admin"


def _login_file() -> Path:
    _, p = context()
    return p.config_dir / "central-admin.json"


def _secrets() -> SecretStore:
    _, p = context()
    return SecretStore(p.config_dir / "credentials.json")


def _client(ctx: click.Context) -> CentralClient:
    url, token = ctx.obj.get("url"), ctx.obj.get("token")
    if not url:
        try:
            url = json.loads(_login_file().read_text())["url"]
        except (FileNotFoundError, ValueError, KeyError):
            raise click.ClickException("no central server: pass --url, or run claude-sidecar admin login URL --token T") from None
    token = token or _secrets().get(TOKEN_NAME)
    if not token:
        raise click.ClickException("no admin token: pass --token, or run claude-sidecar admin login URL --token T")
    return CentralClient(url, token)


def _print(data: Any, as_json: bool, rows_key: str | None = None, columns: tuple[str, ...] = ()) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    rows = data[rows_key] if rows_key else data
    if not isinstance(rows, list):
        for k, v in rows.items():
            click.echo(f"{k}: {json.dumps(v) if isinstance(v, dict | list) else shown(str(v))}")
        return
    if not rows:
        click.echo("(none)")
        return
    cols = columns or tuple(rows[0])
    widths = [max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in cols]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(_cell(r.get(c)).ljust(w) for c, w in zip(cols, widths, strict=True)))


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if v < 1e9 else f"{v:.0f}"
    return shown(str(v))  # a name stored before the server refused such names cannot drive the terminal


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
@click.option("--url", envvar="CLAUDE_SIDECAR_CENTRAL_URL", help="The central server's URL.")
@click.option("--token", envvar="CLAUDE_SIDECAR_ADMIN_TOKEN", help="An admin token (csa_...).")
@click.pass_context
def admin(ctx: click.Context, url: str | None, token: str | None) -> None:
    """Manage an org's central server: teams, developers, devices, tokens, policy, usage."""
    ctx.obj = {"url": url, "token": token}


@admin.command()
@click.argument("url")
@click.option("--token", "login_token", required=True, help="Your admin token (csa_...).")
def login(url: str, login_token: str) -> None:
    """Remember URL and store the admin token in the keyring."""
    me = CentralClient(url, login_token).call("GET", "/v1/admin/whoami")
    store = _secrets()
    store.set(TOKEN_NAME, login_token)
    path = _login_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps({"url": url.rstrip("/")}))
    click.echo(f"logged in to {url} as {me['name']} ({me['role']}); token stored in {store.where}")


@admin.command()
@json_option
@click.pass_context
def whoami(ctx: click.Context, as_json: bool) -> None:
    """The admin user the token belongs to."""
    _print(_client(ctx).call("GET", "/v1/admin/whoami"), as_json)


# ------------------------------------------------------------------------- people


@admin.group()
def teams() -> None:
    """Teams."""


@teams.command("list")
@json_option
@click.pass_context
def teams_list(ctx: click.Context, as_json: bool) -> None:
    """List teams."""
    _print(_client(ctx).call("GET", "/v1/admin/teams"), as_json, "teams", ("name", "id", "developers"))


@teams.command("create")
@click.argument("name")
@json_option
@click.pass_context
def teams_create(ctx: click.Context, name: str, as_json: bool) -> None:
    """Create a team."""
    _print(_client(ctx).call("POST", "/v1/admin/teams", {"name": name}), as_json)


@admin.group()
def developers() -> None:
    """Developers."""


@developers.command("list")
@json_option
@click.pass_context
def developers_list(ctx: click.Context, as_json: bool) -> None:
    """List developers."""
    _print(_client(ctx).call("GET", "/v1/admin/developers"), as_json, "developers", ("email", "name", "team", "devices", "id"))


@developers.command("create")
@click.argument("email")
@click.option("--name", help="Display name (default: the email).")
@click.option("--team", help="Team name or id.")
@json_option
@click.pass_context
def developers_create(ctx: click.Context, email: str, name: str | None, team: str | None, as_json: bool) -> None:
    """Create a developer."""
    _print(_client(ctx).call("POST", "/v1/admin/developers", {"email": email, "name": name, "team": team}), as_json)


@developers.command("move")
@click.argument("email")
@click.option("--team", help="The new team (name or id).")
@click.option("--no-team", is_flag=True, help="Take the developer out of any team.")
@click.pass_context
def developers_move(ctx: click.Context, email: str, team: str | None, no_team: bool) -> None:
    """Move a developer to another team; their sidecars get the new effective policy."""
    if bool(team) == no_team:
        raise click.UsageError("pass --team NAME or --no-team")
    row = _client(ctx).call("PATCH", f"/v1/admin/developers/{email}", {"team": team})
    click.echo(f"moved {email} to {team or 'no team'} (policy version {row['version']})")


@admin.group()
def tokens() -> None:
    """Enrollment tokens."""


def _duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration such as 30m, 24h or 7d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@tokens.command("create")
@click.argument("developer")
@click.option("--ttl", default="24h", show_default=True, help="How long the token is valid (30m, 24h, 7d).")
@json_option
@click.pass_context
def tokens_create(ctx: click.Context, developer: str, ttl: str, as_json: bool) -> None:
    """A one-time enrollment token for DEVELOPER (email or id); shown once."""
    row = _client(ctx).call("POST", "/v1/admin/enrollment-tokens", {"developer": developer, "ttl_seconds": _duration(ttl)})
    if as_json:
        _print(row, True)
        return
    client = _client(ctx)
    click.echo(f"enrollment token for {developer} (one use, shown once):\n{row['token']}")
    click.echo(f"on the developer's machine: claude-sidecar enroll {client.url} --token {row['token']}")


@tokens.command("list")
@json_option
@click.pass_context
def tokens_list(ctx: click.Context, as_json: bool) -> None:
    """Outstanding enrollment tokens (their ids; the tokens were shown once)."""
    _print(_client(ctx).call("GET", "/v1/admin/enrollment-tokens"), as_json, "tokens", ("id", "email", "created_by", "expires_at"))


@tokens.command("revoke")
@click.argument("enrollment_id")
@click.pass_context
def tokens_revoke(ctx: click.Context, enrollment_id: str) -> None:
    """Make an outstanding enrollment token unusable."""
    _client(ctx).call("DELETE", f"/v1/admin/enrollment-tokens/{enrollment_id}")
    click.echo(f"revoked {enrollment_id}")


@admin.group()
def devices() -> None:
    """Enrolled devices."""


@devices.command("list")
@json_option
@click.pass_context
def devices_list(ctx: click.Context, as_json: bool) -> None:
    """List devices."""
    _print(_client(ctx).call("GET", "/v1/admin/devices"), as_json, "devices", ("id", "email", "name", "policy_version", "policy_error", "outbox_backlog", "last_seen_at", "revoked_at"))


@devices.command("revoke")
@click.argument("device_id")
@click.pass_context
def devices_revoke(ctx: click.Context, device_id: str) -> None:
    """Revoke a device; its next call is refused."""
    _client(ctx).call("DELETE", f"/v1/admin/devices/{device_id}")
    click.echo(f"revoked {device_id}")


@admin.group("admins")
def admins_group() -> None:
    """Admin users (roles: admin, viewer)."""


@admins_group.command("list")
@json_option
@click.pass_context
def admins_list(ctx: click.Context, as_json: bool) -> None:
    """List admin users."""
    _print(_client(ctx).call("GET", "/v1/admin/admins"), as_json, "admins", ("name", "role", "id", "revoked_at"))


@admins_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "viewer"]), default="viewer", show_default=True)
@json_option
@click.pass_context
def admins_create(ctx: click.Context, name: str, role: str, as_json: bool) -> None:
    """Create an admin user; prints the token once."""
    row = _client(ctx).call("POST", "/v1/admin/admins", {"name": name, "role": role})
    _print(row, as_json) if as_json else click.echo(f"token for {name} ({role}, shown once):\n{row['token']}")


@admins_group.command("revoke")
@click.argument("name")
@click.pass_context
def admins_revoke(ctx: click.Context, name: str) -> None:
    """Revoke an admin user's token."""
    _client(ctx).call("DELETE", f"/v1/admin/admins/{name}")
    click.echo(f"revoked {name}")


# ------------------------------------------------------------------------- policy


@admin.group()
def policy() -> None:
    """Signed policy: push, show, history, diff, rollback."""


scope_option = click.option("--scope", default="org", show_default=True, help="org, team:NAME or developer:EMAIL")


@policy.command("push")
@click.argument("file", type=click.File("r"))
@scope_option
@click.option("--comment", "-m", help="Why (kept in the history and the audit log).")
@click.pass_context
def policy_push(ctx: click.Context, file: Any, scope: str, comment: str | None) -> None:
    """Push FILE (JSON; '-' for stdin) as the new document of a scope."""
    try:
        doc = json.load(file)
    except ValueError as e:
        raise click.ClickException(f"{file.name}: not valid JSON: {e}") from None
    row = _client(ctx).call("POST", "/v1/admin/policy", {"scope": scope, "document": doc, "comment": comment})
    click.echo(f"pushed {scope} as version {row['version']}")


@policy.command("show")
@scope_option
@click.option("--version", type=int, help="As of this version.")
@click.option("--effective", is_flag=True, help="The merged policy a sidecar in this scope gets.")
@click.pass_context
def policy_show(ctx: click.Context, scope: str, version: int | None, effective: bool) -> None:
    """Print a scope's policy document (JSON)."""
    row = _client(ctx).call("GET", "/v1/admin/policy", query={"scope": scope, "version": version})
    click.echo(json.dumps(row["effective"] if effective else row["document"], indent=2, sort_keys=True))


@policy.command("history")
@click.option("--scope", default=None, help="Only this scope (default: every scope).")
@json_option
@click.pass_context
def policy_history(ctx: click.Context, scope: str | None, as_json: bool) -> None:
    """Policy versions, newest first."""
    data = _client(ctx).call("GET", "/v1/admin/policy/history", query={"scope": scope})
    _print(data, as_json, "versions", ("version", "scope", "created_by", "comment"))


@policy.command("diff")
@click.argument("old", type=int)
@click.argument("new", type=int, required=False)
@scope_option
@click.pass_context
def policy_diff(ctx: click.Context, old: int, new: int | None, scope: str) -> None:
    """Unified diff of a scope's document between versions OLD and NEW (default: latest)."""
    client = _client(ctx)
    docs = [client.call("GET", "/v1/admin/policy", query={"scope": scope, "version": v}) for v in (old, new)]
    texts = [json.dumps(d["document"], indent=2, sort_keys=True).splitlines(keepends=True) for d in docs]
    names = [f"{scope}@{d['version']}" for d in docs]
    sys.stdout.writelines(difflib.unified_diff(texts[0], texts[1], names[0], names[1]))


@policy.command("rollback")
@click.argument("version", type=int)
@scope_option
@click.pass_context
def policy_rollback(ctx: click.Context, version: int, scope: str) -> None:
    """Make the scope's document at VERSION current again (as a new version)."""
    row = _client(ctx).call("POST", "/v1/admin/policy/rollback", {"scope": scope, "version": version})
    click.echo(f"{scope} rolled back to version {version}'s document, now version {row['version']}")


# ------------------------------------------------------------------ usage, leases, audit


@admin.command()
@click.option("--by", type=click.Choice(["developer", "team", "model", "route", "day"]), default="developer", show_default=True)
@click.option("--since", help="First UTC day, YYYY-MM-DD.")
@click.option("--until", help="Last UTC day, YYYY-MM-DD.")
@json_option
@click.pass_context
def usage(ctx: click.Context, by: str, since: str | None, until: str | None, as_json: bool) -> None:
    """Usage totals reported by enrolled sidecars."""
    data = _client(ctx).call("GET", "/v1/admin/usage", query={"by": by, "since": since, "until": until})
    cols = ("key", "requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd")
    _print(data, as_json, "rows", cols)


@admin.command()
@json_option
@click.pass_context
def leases(ctx: click.Context, as_json: bool) -> None:
    """Budget pools: limit, outstanding leases and spent, per period."""
    _print(_client(ctx).call("GET", "/v1/admin/leases"), as_json, "pools")


@admin.command()
@click.option("--verify", "check", is_flag=True, help="Check the whole hash chain instead of listing it.")
@json_option
@click.pass_context
def audit(ctx: click.Context, check: bool, as_json: bool) -> None:
    """The server's audit log of admin actions (--verify: check its hash chain)."""
    client = _client(ctx)
    if not check:
        _print(client.call("GET", "/v1/admin/audit"), as_json, "entries", ("seq", "time", "kind", "data"))
        return
    entries: list[Entry] = []
    while True:
        page = client.call("GET", "/v1/admin/audit", query={"after": entries[-1].seq if entries else 0})["entries"]
        if not page:
            break
        try:
            entries += [Entry.from_json(e) for e in page]
        except ValueError as e:
            raise click.ClickException(f"the server sent an entry that is not an audit entry: {e}") from None
    report = verify_chain(entries)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif report.ok:
        click.echo(f"ok: {report.entries} entries, the chain is intact")
    else:
        click.echo(f"BROKEN at #{report.first_bad}: {report.problem}")
    if not report.ok:
        sys.exit(1)


COMMANDS = [admin]
