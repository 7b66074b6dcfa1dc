"""The `claude-sidecar` command line: one module per command group."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from sidecar import __version__
from sidecar.errors import SidecarError


class Group(click.Group):
    """A click group that prints SidecarErrors as one clear line (traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SidecarError as e:
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"error: {e.message}", err=True)
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="claude-sidecar")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
def cli(debug: bool) -> None:
    """A localhost proxy that meters, routes and governs Claude Code's model traffic."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Entry point of the console script."""
    cli(prog_name="claude-sidecar")


def _register() -> None:
    from sidecar.cli import (
        admin_cmd,
        audit_cmd,
        cache_cmd,
        central_cmd,
        config_cmd,
        daemon,
        doctor_cmd,
        enroll_cmd,
        keys_cmd,
        mcp_cmd,
        routes_cmd,
        service_cmd,
        tray_cmd,
        tui_cmd,
        usage,
    )

    for mod in (daemon, config_cmd, keys_cmd, usage, routes_cmd, tray_cmd, tui_cmd, audit_cmd, cache_cmd,
                enroll_cmd, central_cmd, admin_cmd, service_cmd, doctor_cmd, mcp_cmd):
        for command in mod.COMMANDS:
            cli.add_command(command)


_register()
