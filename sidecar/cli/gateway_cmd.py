"""Gateway sign-in from the command line: `login-approve`, and how `run` hands Claude Code a
gateway token (sidecar.gateway.oauth has the server side).

`claude-sidecar run -- claude` starts a Claude Code that supports gateway sign-in
(2.1.225 or later) signed in to this sidecar: `CLAUDE_CODE_USE_GATEWAY=1`, the sidecar as
`ANTHROPIC_BASE_URL`, and a token the sidecar minted for it on an inherited socket named by
`CLAUDE_CODE_GATEWAY_TOKEN_FILE_DESCRIPTOR` (Claude Code reads it once and unsets the
variable; the token is never in the environment). That needs every provider to hold its own
key, since a signed-in client sends no Anthropic credential; otherwise, for older CLIs and
for other commands, `run` uses ANTHROPIC_BASE_URL alone. `CLAUDE_SIDECAR_CONNECT=gateway`
or `base-url` forces one mode; `claude-sidecar env` follows the same rules for the `claude`
on PATH (`shell_env`). In both modes `run` passes the config's [claude_code.settings]
to Claude Code as `--settings` (see `with_settings`) and, unless the user set up telemetry,
points Claude Code's own OpenTelemetry at the sidecar (`with_telemetry`); the exporter then
carries the token in OTEL_EXPORTER_OTLP_HEADERS (the gateway token as `x-api-key` when
signed in, else the local token as `x-sidecar-token` when one is needed), the one place a
token is in that Claude Code's environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
from collections.abc import Mapping
from pathlib import Path

import click

from sidecar.cli import mcp_cmd
from sidecar.cli.common import Daemon, context, find_daemon
from sidecar.errors import SidecarError

MIN_GATEWAY_VERSION = (2, 1, 225)  # the first Claude Code that shows a gateway's spend cap
MODES = ("auto", "gateway", "base-url")


def cli_version(executable: str) -> tuple[int, ...] | None:
    """`claude --version` as numbers (2.1.332), or None when it does not answer like Claude Code."""
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"\s*(\d+)\.(\d+)\.(\d+)", out.stdout)
    return tuple(int(x) for x in m.groups()) if m else None


def wants_gateway(cmd: tuple[str, ...], status: Mapping[str, object], environ: Mapping[str, str]) -> bool:
    """Whether `run` should sign `cmd` in to the sidecar as its gateway (see the module docstring)."""
    mode = environ.get("CLAUDE_SIDECAR_CONNECT", "auto")
    if mode not in MODES:
        raise SidecarError(f"CLAUDE_SIDECAR_CONNECT must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "base-url":
        return False
    providers = status.get("providers")
    own_keys = isinstance(providers, list) and all(p.get("credentials") != "client" for p in providers)
    if mode == "gateway":
        if not own_keys:
            raise SidecarError(
                "gateway sign-in needs every provider to hold its own key (set one with `claude-sidecar keys set`); "
                "a signed-in Claude Code sends no Anthropic credential"
            )
        return True
    if not own_keys or Path(cmd[0]).name not in ("claude", "claude.exe"):
        return False
    version = cli_version(cmd[0])
    return version is not None and version >= MIN_GATEWAY_VERSION


def shell_env(d: Daemon, environ: Mapping[str, str]) -> dict[str, str | None] | None:
    """What `claude-sidecar env` prints to sign the `claude` on PATH in to the sidecar (None:
    base-URL mode). A shell cannot hold a descriptor, so the token goes in
    ANTHROPIC_AUTH_TOKEN; signed in, Claude Code sends only that, whatever key the shell
    also has. The local token's header line is left out of ANTHROPIC_CUSTOM_HEADERS."""
    found = shutil.which("claude", path=environ.get("PATH"))
    status = d.call("GET", "/sidecar/v1/status")
    if found is None and environ.get("CLAUDE_SIDECAR_CONNECT") != "gateway":
        return None
    if not wants_gateway((found or "claude",), status, environ):
        return None
    answer = d.call("POST", "/sidecar/v1/gateway/token")
    env: dict[str, str | None] = {
        "ANTHROPIC_BASE_URL": d.url,
        "CLAUDE_CODE_USE_GATEWAY": "1",
        "ANTHROPIC_AUTH_TOKEN": answer["access_token"],
    }
    env.update(mcp_cmd.tool_search_env(status, environ))
    custom = environ.get("ANTHROPIC_CUSTOM_HEADERS")
    if custom is not None:
        kept = [ln for ln in custom.splitlines() if ln.strip() and ln.split(":", 1)[0].strip().lower() != "x-sidecar-token"]
        env["ANTHROPIC_CUSTOM_HEADERS"] = "\n".join(kept) if kept else None
    return env


def token_socket(token: str) -> int:
    """An inheritable socket holding `token` and a newline, for CLAUDE_CODE_GATEWAY_TOKEN_FILE_DESCRIPTOR
    (Claude Code reads a token only from a socket there)."""
    ours, theirs = socket.socketpair()
    with ours:
        ours.sendall(token.encode() + b"\n")
        ours.shutdown(socket.SHUT_WR)
    fd = theirs.detach()
    os.set_inheritable(fd, True)
    return fd


def gateway_env(d: Daemon, child_env: dict[str, str]) -> tuple[dict[str, str], list[int], str]:
    """`child_env` signed in to the sidecar as Claude Code's gateway, the descriptors to keep,
    and the token (for the telemetry exporter's header)."""
    answer = d.call("POST", "/sidecar/v1/gateway/token")
    env = {k: v for k, v in child_env.items() if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS")}
    env["CLAUDE_CODE_USE_GATEWAY"] = "1"
    env["ANTHROPIC_BASE_URL"] = d.url
    if sys.platform == "win32":
        env["ANTHROPIC_AUTH_TOKEN"] = answer["access_token"]  # no descriptor hand-over there
        return env, [], answer["access_token"]
    fd = token_socket(answer["access_token"])
    env["CLAUDE_CODE_GATEWAY_TOKEN_FILE_DESCRIPTOR"] = str(fd)
    return env, [fd], answer["access_token"]


TELEMETRY_VARS = ("CLAUDE_CODE_ENABLE_TELEMETRY", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT")


def with_telemetry(cmd: tuple[str, ...], env: dict[str, str], d: Daemon, header: str | None) -> dict[str, str]:
    """`env` with Claude Code's own OpenTelemetry exported to the sidecar (logs and metrics,
    OTLP/HTTP protobuf), unless the user configured telemetry themselves. `header` is the
    `name=value` the exporter must send (the token), or None when the sidecar needs none."""
    if Path(cmd[0]).name not in ("claude", "claude.exe") or any(k in env for k in TELEMETRY_VARS):
        return env
    out = {
        **env,
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": d.url,
    }
    if header is not None:
        out["OTEL_EXPORTER_OTLP_HEADERS"] = header
    return out


def with_settings(cmd: tuple[str, ...], d: Daemon) -> tuple[str, ...]:
    """`cmd` with the sidecar's [claude_code.settings] as `--settings JSON` when it runs Claude Code.

    Claude Code reads a gateway's /managed/settings only after a `/login` over https, never
    with a handed-over token or ANTHROPIC_BASE_URL; so `run` passes the same document on the
    command line, where it applies like a settings file of the user's.
    """
    if Path(cmd[0]).name not in ("claude", "claude.exe") or "--settings" in cmd:
        return cmd
    try:
        doc = d.call("GET", "/managed/settings")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return cmd  # no [claude_code.settings]
        raise SidecarError(f"the sidecar did not give the managed settings (HTTP {e.code}); check its log") from None
    except OSError as e:
        raise SidecarError(f"the sidecar did not answer for the managed settings: {e}") from None
    return (cmd[0], "--settings", json.dumps(doc["settings"], separators=(",", ":")), *cmd[1:])


@click.command("login-approve")
@click.argument("code", required=False)
def login_approve(code: str | None) -> None:
    """Approve a Claude Code /login to this sidecar by the code it shows (no CODE: list them)."""
    _, p = context()
    d = find_daemon(p)
    if not d:
        raise SidecarError("claude-sidecar is not running; start it with: claude-sidecar start")
    if code is None:
        waiting = d.call("GET", "/sidecar/v1/gateway/pending")["pending"]
        if not waiting:
            click.echo("no sign-in is waiting for approval")
        for w in waiting:
            click.echo(f"{w['user_code']}  ({w['surface'] or 'unknown client'}, expires in {w['expires_in']} s)")
        return
    try:
        d.call("POST", "/sidecar/v1/gateway/approve/" + re.sub(r"[^A-Za-z-]", "", code))
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise SidecarError(f"no sign-in is waiting with code {code!r}; check the code Claude Code shows (or run /login again)") from None
        raise
    click.echo(f"approved: Claude Code signed in with code {code.upper()} can now use this sidecar")


COMMANDS = [login_approve]
