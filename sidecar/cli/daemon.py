"""`start`, `stop`, `status`, `env` and `run`: the daemon's life cycle and how clients find it."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import click

from sidecar import __version__
from sidecar.cli import gateway_cmd, mcp_cmd
from sidecar.cli.common import Daemon, context, find_daemon, pid_alive
from sidecar.errors import SidecarError
from sidecar.paths import Paths
from sidecar.secrets import SecretStore, resolve_keys
from sidecar.sync import status as sync_status

START_TIMEOUT = 20.0


def _check_keys(cfg: Any, p: Paths) -> None:
    store = SecretStore(p.config_dir / "credentials.json")
    for prov in cfg.providers:
        resolve_keys(prov, store)


def _spawn(config: str | None, port: int | None, p: Paths) -> Daemon:
    env = dict(os.environ)
    if port is not None:
        env["CLAUDE_SIDECAR_PORT"] = str(port)
    if config:
        env["CLAUDE_SIDECAR_CONFIG"] = os.path.abspath(config)
    p.ensure()
    log = open(p.log_file, "ab")
    kwargs: dict[str, Any] = {"start_new_session": True} if sys.platform != "win32" else {"creationflags": 0x00000008 | 0x00000200}
    child = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "start", "--foreground"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, close_fds=True, **kwargs,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = p.log_file.read_text(errors="replace").strip().splitlines()[-5:]
            raise SidecarError("the daemon exited at start:\n  " + "\n  ".join(tail) + f"\n(log: {p.log_file})")
        d = find_daemon(p)
        if d and d.state.get("pid") == child.pid:
            return d
        time.sleep(0.05)
    child.terminate()
    raise SidecarError(f"the daemon did not become healthy within {START_TIMEOUT:.0f} s (log: {p.log_file})")


def ensure_running(config: str | None = None, port: int | None = None) -> tuple[Daemon, bool]:
    """The running daemon, started in the background if needed; True when this call started it."""
    cfg, p = context(config)
    d = find_daemon(p)
    if d:
        return d, False
    _check_keys(cfg, p)
    return _spawn(config, port, p), True


def _port_taken(host: str, port: int) -> bool:
    """Whether another program listens on `host`:`port` (a probe the daemon's own bind repeats)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if sys.platform != "win32":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            return e.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def _refuse_what_would_not_apply(running: Daemon, config: str | None, port: int | None) -> None:
    """A running daemon keeps its config file and port: a `start` asking for others fails, saying so."""
    asked = []
    if config and os.path.abspath(config) != os.path.abspath(str(running.state.get("config_file", ""))):
        asked.append((f"{os.path.abspath(config)} was NOT applied", f"--config {shlex.quote(config)}"))
    if port and port != running.state.get("port"):
        asked.append((f"--port {port} was NOT applied", f"--port {port}"))
    if asked:
        raise SidecarError(
            f"claude-sidecar is already running at {running.url} (pid {running.state['pid']}) with "
            f"{running.state.get('config_file', 'its config')}; " + " and ".join(a for a, _ in asked)
            + ". To use it: claude-sidecar stop && claude-sidecar start " + " ".join(f for _, f in asked)
        )


@click.command()
@click.option("--foreground", is_flag=True, help="Run in this process (for service managers).")
@click.option("--port", type=click.IntRange(0, 65535), help="Listen on this port, or fail if it is taken (without it: [server] port, default 8787, or the next free one).")
@click.option("--config", type=click.Path(dir_okay=False), help="Use this config file.")
def start(foreground: bool, port: int | None, config: str | None) -> None:
    """Start the sidecar (in the background unless --foreground)."""
    if port is not None:
        os.environ["CLAUDE_SIDECAR_PORT"] = str(port)
    cfg, p = context(config)
    running = find_daemon(p)
    if running is not None and not foreground:
        _refuse_what_would_not_apply(running, config, port)
    if port and running is None and _port_taken(cfg.server.host, port):
        # An explicit --port is a request for that port: taking the next one silently would
        # leave the user's client pointed at the wrong place.
        raise SidecarError(
            f"port {port} on {cfg.server.host} is taken by another program; "
            "choose another with --port, or start without --port to take the next free one"
        )
    if foreground:
        running = find_daemon(p)
        if running and running.state.get("pid") != os.getpid():
            raise SidecarError(f"already running at {running.url} (pid {running.state['pid']}); stop it first")
        from sidecar.observability import logs
        from sidecar.proxy.server import run_foreground

        # The daemon's log says what it does, and when: stderr and the rotating file in the log
        # dir, text or JSON, every line redacted (sidecar.observability.logs).
        redact = logs.redactor_for(cfg.governance.guardrails, logs.known_secrets(cfg, p))
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        logs.configure(cfg.observability, p, redact, debug=debug)

        run_foreground(cfg, p)
        return
    d, started = ensure_running(config, port)
    verb = "is running" if started else "was already running"
    click.echo(f"claude-sidecar {__version__} {verb} at {d.url} (pid {d.state['pid']})")
    if started and cfg.server.port and d.state.get("port") != cfg.server.port:
        click.echo(f"port {cfg.server.port} was taken, so it listens on {d.state.get('port')} (set [server] port to choose)")
    click.echo("Point Claude Code at it:")
    click.echo("  claude-sidecar run -- claude")
    click.echo('  or: eval "$(claude-sidecar env)" && claude')


@click.command()
def stop() -> None:
    """Stop the sidecar, letting in-flight streams finish (bounded)."""
    cfg, p = context()
    d = find_daemon(p)
    if not d:
        click.echo("claude-sidecar is not running")
        return
    pid = int(d.state["pid"])
    try:
        d.call("POST", "/sidecar/v1/shutdown")
    except OSError:
        if sys.platform != "win32":
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + cfg.server.shutdown_grace_seconds + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        raise SidecarError(f"pid {pid} did not stop in time; kill it with: kill {pid}")
    click.echo(f"stopped (pid {pid})")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Show pid, address, uptime, providers and today's spend."""
    _, p = context()
    d = find_daemon(p)
    if not d:
        if as_json:
            click.echo(json.dumps({"running": False}))
        else:
            click.echo("claude-sidecar is not running (start it with: claude-sidecar start)")
        sys.exit(1)
    s = d.call("GET", "/sidecar/v1/status")
    if as_json:
        click.echo(json.dumps({"running": True, **s}, indent=2))
        return
    up = int(s["uptime_s"])
    click.echo(f"claude-sidecar {s['version']} running at {s['address']} (pid {s['pid']}, up {up // 3600}h{up % 3600 // 60:02d}m{up % 60:02d}s)")
    if s.get("unix_socket"):
        click.echo(f"  unix socket: {s['unix_socket']}")
    for prov in s["providers"]:
        click.echo(f"  provider {prov['name']} ({prov['type']}) -> {prov['base_url']}  credentials: {prov['credentials']}")
    u = s.get("usage") or {}
    today, month = u.get("today") or {}, u.get("month") or {}
    click.echo(
        f"  today: ${today.get('cost_usd', 0):.4f} in {today.get('requests', 0)} requests;"
        f" this month: ${month.get('cost_usd', 0):.4f}"
    )
    click.echo(f"  in flight: {s['in_flight']}")
    storage = s.get("storage")
    if storage:
        if storage["ok"]:
            click.echo(f"  storage: ok ({storage['pending']} records waiting to be written)")
        else:
            click.echo(f"  storage: DEGRADED, usage is not being recorded: {storage['error']} ({storage['pending']} records waiting)")
    for line in sync_status.lines(s.get("sync")):
        click.echo("  " + line)


TOKEN_HEADER = "x-sidecar-token"
# Claude Code will not start without a credential of some kind. When every provider holds
# its own key, nothing the client presents is used, so it gets this placeholder (never the
# local token, which travels in TOKEN_HEADER only).
AUTH_PLACEHOLDER = "claude-sidecar"


def client_env(d: Daemon, environ: Mapping[str, str]) -> dict[str, str | None]:
    """The environment that points Claude Code (or any Anthropic client) at the daemon;
    None marks a variable to unset. `environ` is the caller's environment.

    The local token goes in a header of its own (ANTHROPIC_CUSTOM_HEADERS, merged with the
    user's), so a Claude subscription login or the user's own key keeps working next to
    providers whose keys the sidecar injects. The sidecar strips the token before anything
    goes upstream.
    """
    env: dict[str, str | None] = {"ANTHROPIC_BASE_URL": d.url}
    s = d.call("GET", "/sidecar/v1/status")
    env.update(mcp_cmd.tool_search_env(s, environ))
    if not s.get("token_required_on_proxy"):
        return env
    env["ANTHROPIC_CUSTOM_HEADERS"] = with_token_header(environ.get("ANTHROPIC_CUSTOM_HEADERS", ""), d.token)
    stale = environ.get("ANTHROPIC_AUTH_TOKEN") == d.token  # set by an older `claude-sidecar env`
    forwards = any(prov["credentials"] == "client" for prov in s["providers"])
    own = environ.get("ANTHROPIC_API_KEY") or (environ.get("ANTHROPIC_AUTH_TOKEN") and not stale)
    if not forwards and not own:
        env["ANTHROPIC_AUTH_TOKEN"] = AUTH_PLACEHOLDER
    elif stale:
        env["ANTHROPIC_AUTH_TOKEN"] = None
    return env


def with_token_header(custom: str, token: str) -> str:
    """ANTHROPIC_CUSTOM_HEADERS (`Name: value` lines) with the local token's line, replacing any old one."""
    lines = [ln for ln in custom.splitlines() if ln.strip() and ln.split(":", 1)[0].strip().lower() != TOKEN_HEADER]
    return "\n".join([*lines, f"{TOKEN_HEADER}: {token}"])


def _quote(shell: str, value: str) -> str:
    if shell == "powershell":
        return "'" + value.replace("'", "''") + "'"
    if shell == "fish":
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return shlex.quote(value)


@click.command()
@click.option("--shell", type=click.Choice(["sh", "fish", "powershell"]), default="sh", show_default=True)
def env(shell: str) -> None:
    """Print the environment for Claude Code: eval "$(claude-sidecar env)"; a `claude` on PATH
    that supports it is signed in to the sidecar as its gateway."""
    _, p = context()
    d = find_daemon(p)
    if not d:
        raise SidecarError("claude-sidecar is not running; start it with: claude-sidecar start")
    signed_in = gateway_cmd.shell_env(d, os.environ)
    for k, v in (signed_in if signed_in is not None else client_env(d, os.environ)).items():
        if v is None:
            click.echo({"fish": f"set -e {k};", "powershell": f"Remove-Item Env:{k} -ErrorAction SilentlyContinue"}.get(shell, f"unset {k}"))
            continue
        q = _quote(shell, v)
        if shell == "fish":
            click.echo(f"set -gx {k} {q};")
        elif shell == "powershell":
            click.echo(f"$env:{k} = {q}")
        else:
            click.echo(f"export {k}={q}")


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run(cmd: tuple[str, ...]) -> None:
    """Run a command such as `claude` pointed at the sidecar (started if needed); a Claude Code
    that supports it is signed in to the sidecar as its gateway."""
    d, started = ensure_running()
    if started:
        click.echo(f"claude-sidecar started at {d.url}", err=True)
    child_env = dict(os.environ)
    for k, v in client_env(d, os.environ).items():
        if v is None:
            child_env.pop(k, None)
        else:
            child_env[k] = v
    status = d.call("GET", "/sidecar/v1/status")
    header = f"x-sidecar-token={d.token}" if status.get("token_required_on_proxy") else None
    if gateway_cmd.wants_gateway(cmd, status, os.environ):
        child_env, _, token = gateway_cmd.gateway_env(d, child_env)  # the token's descriptor is inherited
        header = f"x-api-key={token}"
    child_env = gateway_cmd.with_telemetry(cmd, child_env, d, header)
    cmd = gateway_cmd.with_settings(cmd, d)
    if sys.platform == "win32":
        sys.exit(subprocess.call(list(cmd), env=child_env))
    try:
        os.execvpe(cmd[0], list(cmd), child_env)
    except FileNotFoundError:
        raise SidecarError(f"command not found: {cmd[0]}") from None


COMMANDS = [start, stop, status, env, run, *gateway_cmd.COMMANDS]
