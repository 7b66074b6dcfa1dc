"""`claude-sidecar tui`: the live dashboard in the terminal (Textual), in this process."""

from __future__ import annotations

import os

import click

from sidecar import paths


@click.command()
@click.option("--url", metavar="URL", help="Watch the sidecar at URL instead of the one running here (needs --token).")
@click.option("--token", metavar="TOKEN", envvar="CLAUDE_SIDECAR_TOKEN", help="The local token of the sidecar at --url [env: CLAUDE_SIDECAR_TOKEN].")
@click.option("--demo", is_flag=True, help="Show sample data instead of a sidecar (nothing is contacted).")
@click.option(
    "--refresh",
    type=click.FloatRange(0.05, 5.0),
    default=0.15,
    show_default=True,
    help="Seconds between screen updates (events arriving faster are batched).",
)
def tui(url: str | None, token: str | None, demo: bool, refresh: float) -> None:
    """Watch spend, requests, routes, cache and budgets live (q quits, ctrl+p for commands).

    Finds the running sidecar through its state file and follows it across restarts;
    if none is running yet, it waits for one.
    """
    if demo and (url or token):
        raise click.UsageError("--demo shows sample data; it takes no --url or --token")
    if token and not url:
        raise click.UsageError("--token goes with --url (the local sidecar's token is read from its state dir)")
    if url and not token:
        raise click.UsageError("--url needs --token (or CLAUDE_SIDECAR_TOKEN): the control API requires it")
    if url and not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--url")
    # Imported here: Textual loads only when the dashboard is wanted.
    from tui import locate
    from tui.app import SidecarDashboard
    from tui.demo import demo_app
    from tui.source import LiveSource

    if demo:
        from tui.clock import SystemClock

        app = demo_app(SystemClock())
    else:
        locator = locate.fixed(url, token) if url and token else locate.from_state(paths.resolve(dict(os.environ)))
        app = SidecarDashboard(LiveSource(locator), refresh_interval=refresh)
    app.run()


COMMANDS = [tui]
