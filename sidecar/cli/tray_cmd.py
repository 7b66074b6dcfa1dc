"""`claude-sidecar tray`: today's spend and the routes in the system tray, in its own process."""

from __future__ import annotations

import click

from sidecar import paths
from sidecar.errors import SidecarError


@click.command()
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 3600),
    default=5.0,
    show_default=True,
    help="Seconds between polls of the sidecar (its events refresh the icon sooner).",
)
def tray(interval: float) -> None:
    """Show today's spend, budgets and routes as a tray icon (runs until Quit)."""
    # Imported here: pystray and Pillow load only when the tray is wanted.
    from tray.app import TrayUnavailable, run

    try:
        run(paths.resolve(), interval)
    except TrayUnavailable as e:
        raise SidecarError(str(e)) from None


COMMANDS = [tray]
