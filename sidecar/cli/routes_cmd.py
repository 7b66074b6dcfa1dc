"""`claude-sidecar routes [list|enable NAME|disable NAME]`: routes with their health, toggled live."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
from typing import Any

import click

from sidecar.cli.common import Daemon, context, find_daemon
from sidecar.errors import SidecarError


def _daemon(config: str | None) -> Daemon:
    _, p = context(config)
    d = find_daemon(p)
    if d is None:
        raise SidecarError("the sidecar is not running (start it with `claude-sidecar start`)")
    return d


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    s = max(0.0, time.time() - ts)
    return f"{s:.0f}s ago" if s < 90 else f"{s / 60:.0f}m ago" if s < 5400 else f"{s / 3600:.1f}h ago"


def _show(routes: list[dict[str, Any]]) -> None:
    if not routes:
        click.echo("no routes configured: every request goes to the default provider (add [[routes]] to the config)")
        return
    for r in routes:
        match = ", ".join(f"{k}={v}" for k, v in r["match"].items()) or "everything"
        state = "enabled" if r["enabled"] else "DISABLED"
        click.echo(f"{r['name']}  [{state}]  match: {match}  last upstream: {r['last_upstream'] or '-'}")
        for kind in ("targets", "fallbacks"):
            for t in r[kind]:
                model = t["model"] or "(client's model)"
                fails = f"{t['failures']}/{t['requests']} failed" if t["requests"] else "unused"
                click.echo(
                    f"  {kind[:-1]:<8} {t['provider']}/{model}  weight {t['weight']}  key {t['key'] or 'client'}  "
                    f"breaker {t['breaker']}  {fails}  last used {_ago(t['last_used_at'])}"
                )


def _call(d: Daemon, method: str, path: str) -> Any:
    try:
        return d.call(method, path)
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = f"HTTP {e.code}"
        raise SidecarError(msg.removeprefix("claude-sidecar: ")) from None


@click.group("routes", invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file to use.")
@click.option("--json", "as_json", is_flag=True, help="Print the routes as JSON.")
@click.pass_context
def routes(ctx: click.Context, config_path: str | None, as_json: bool) -> None:
    """Show routes with their targets' health; enable or disable one at run time."""
    ctx.obj = config_path
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_cmd, as_json=as_json)


@routes.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the routes as JSON.")
@click.pass_obj
def list_cmd(config_path: str | None, as_json: bool) -> None:
    """List routes, targets, breaker states and what served last."""
    data = _call(_daemon(config_path), "GET", "/sidecar/v1/routes")
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _show(data["routes"])


def _toggle(config_path: str | None, name: str, action: str) -> None:
    r = _call(_daemon(config_path), "POST", f"/sidecar/v1/routes/{urllib.parse.quote(name, safe='')}/{action}")
    click.echo(f"route {r['name']} is now {'enabled' if r['enabled'] else 'disabled'} (until the next restart)")


@routes.command("enable")
@click.argument("name")
@click.pass_obj
def enable(config_path: str | None, name: str) -> None:
    """Enable route NAME now (no restart)."""
    _toggle(config_path, name, "enable")


@routes.command("disable")
@click.argument("name")
@click.pass_obj
def disable(config_path: str | None, name: str) -> None:
    """Disable route NAME now: its traffic goes to the next matching route."""
    _toggle(config_path, name, "disable")


COMMANDS = [routes]
