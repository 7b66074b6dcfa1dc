"""`claude-sidecar cache [stats|clear]`: hit rates, tokens and dollars saved; emptying the cache.

With a running daemon both go through its control API (so its in-memory index is cleared
too); without one they read or change the store directly.
"""

from __future__ import annotations

import json
import urllib.error
from typing import Any

import click

from sidecar.cache.store import CacheStore, summary
from sidecar.cli.common import context, find_daemon
from sidecar.config import Config
from sidecar.errors import SidecarError
from sidecar.paths import Paths


def _offline_stats(cfg: Config, p: Paths) -> dict[str, Any]:
    if cfg.cache.mode == "off":
        return {"mode": "off"}
    max_bytes = int(cfg.cache.max_mb * 1024 * 1024)
    if not p.db_file.exists():
        return summary(cfg.cache.mode, CacheStore.empty_counters(), 0, 0, max_bytes)
    store = CacheStore.open(p.db_file)
    try:
        entries, size = store.sizes()
        return summary(cfg.cache.mode, store.counters(), entries, size, max_bytes)
    finally:
        store.close()


def _offline_clear(p: Paths) -> int:
    if not p.db_file.exists():
        return 0
    store = CacheStore.open(p.db_file)
    try:
        return store.clear()
    finally:
        store.close()


def _call(config_path: str | None, method: str, path: str) -> Any | None:
    """The daemon's answer, or None when no daemon is running."""
    _, p = context(config_path)
    d = find_daemon(p)
    if d is None:
        return None
    try:
        return d.call(method, path)
    except urllib.error.HTTPError as e:
        raise SidecarError(f"the sidecar answered {method} {path} with HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise SidecarError(f"cannot reach the sidecar at {d.url}: {e}") from None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _show(s: dict[str, Any]) -> None:
    click.echo(f"mode:      {s['mode']}")
    if s["mode"] == "off":
        click.echo("the cache is off: set [cache] mode in the config to turn it on")
        return
    click.echo(f"entries:   {s['entries']} ({_size(s['bytes'])} of {_size(s['max_bytes'])})")
    hits = s["hits_exact"] + s["hits_semantic"]
    click.echo(
        f"lookups:   {s['lookups']}  hits {hits} ({s['hit_rate']:.1%}): {s['hits_exact']} exact, "
        f"{s['hits_semantic']} semantic  misses {s['misses']}  bypassed {s['bypass']}"
    )
    click.echo(f"saved:     {s['tokens_saved']:,} tokens, ${s['usd_saved']:.2f}")
    if s["mode"] in ("semantic", "shadow") or s["shadow_would_hit"]:
        click.echo(
            f"semantic:  {s['shadow_would_hit']} shadow would-be hits ({s['shadow_agreed']} agreed with the new answer), "
            f"{s['semantic_skipped']} lookups skipped"
            + (f", model {s['embedder']}" if "embedder" in s else "")
        )


@click.group("cache", invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file to use.")
@click.pass_context
def cache(ctx: click.Context, config_path: str | None) -> None:
    """The response cache: hit rates and savings; clear it. Without a subcommand, stats."""
    ctx.obj = config_path
    if ctx.invoked_subcommand is None:
        ctx.invoke(stats, as_json=False)


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_obj
def stats(config_path: str | None, as_json: bool) -> None:
    """Entries, hit rates, tokens and dollars saved."""
    data = _call(config_path, "GET", "/sidecar/v1/cache")
    if data is None:
        cfg, p = context(config_path)
        data = _offline_stats(cfg, p)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _show(data)


@cache.command("clear")
@click.pass_obj
def clear(config_path: str | None) -> None:
    """Delete every stored answer (the savings counters are kept)."""
    data = _call(config_path, "POST", "/sidecar/v1/cache/clear")
    n = data["cleared"] if data is not None else _offline_clear(context(config_path)[1])
    click.echo(f"cleared {n} cached answer{'s' if n != 1 else ''}")


COMMANDS = [cache]
