"""The rough edges a new user meets in the first hour: each answer is one line naming the fix,
with the exit codes of PRODUCT.md (0 ok, 1 failure, 2 usage error)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import keyring
import pytest
from click.testing import CliRunner

from sidecar import paths
from sidecar.central.enrollment import enrollment_file
from sidecar.cli import cli
from sidecar.daemon_state import read_state
from sidecar.secrets import SERVICE
from sidecar.testing.cli import cli as run_cli
from sidecar.testing.cli import write_config
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config, sidecar_in_process

SECRET = "sk-openai-never-show-me"
OPENAI = '[[providers]]\nname = "openai"\ntype = "openai"\nkeys = ["keyring:openai"]\n'


def write(text: str) -> Path:
    cfg = paths.resolve().config_file
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(text)
    return cfg


# ------------------------------------------------------------------ keys set


def test_keys_set_for_an_unconfigured_provider_is_refused_naming_the_fix() -> None:
    r = CliRunner().invoke(cli, ["keys", "set", "openai", "--stdin"], input=SECRET + "\n")

    assert r.exit_code == 1
    assert keyring.get_password(SERVICE, "openai") is None
    assert "no provider 'openai' is configured" in r.stderr
    assert "configured: anthropic" in r.stderr
    assert "--force" in r.stderr and "[[providers]]" in r.stderr
    assert SECRET not in r.output


def test_keys_set_force_stores_for_a_provider_configured_later() -> None:
    r = CliRunner().invoke(cli, ["keys", "set", "openai", "--stdin", "--force"], input=SECRET + "\n")

    assert r.exit_code == 0, r.output
    assert keyring.get_password(SERVICE, "openai") == SECRET


def test_keys_set_on_an_enrolled_sidecar_warns_instead(hermetic_env: Path) -> None:
    """The org's policy may name providers the local file does not; it never carries their keys."""
    enrolled = enrollment_file(paths.resolve())
    enrolled.parent.mkdir(parents=True, exist_ok=True)
    enrolled.write_text("{}")

    r = CliRunner().invoke(cli, ["keys", "set", "openai", "--stdin"], input=SECRET + "\n")

    assert r.exit_code == 0, r.output
    assert "warning: no provider 'openai'" in r.stderr
    assert keyring.get_password(SERVICE, "openai") == SECRET


@pytest.mark.parametrize(
    "config",
    [
        OPENAI,  # the provider's own name
        '[[providers]]\nname = "gpt"\ntype = "openai"\nkeys = ["keyring:openai"]\n',  # a keyring: reference
        '[[mcp.servers]]\nname = "t"\nurl = "http://127.0.0.1:9/mcp"\nheaders = { Authorization = "keyring:openai" }\n',
    ],
)
def test_keys_set_accepts_every_name_the_config_refers_to(config: str) -> None:
    write(config)

    r = CliRunner().invoke(cli, ["keys", "set", "openai", "--stdin"], input=SECRET + "\n")

    assert r.exit_code == 0, r.output
    assert keyring.get_password(SERVICE, "openai") == SECRET


def test_a_piped_key_is_read_without_a_getpass_warning(hermetic_env: Path) -> None:
    write(OPENAI)
    # No controlling terminal (a new session), stdin a pipe: as in `pass show openai | claude-sidecar keys set openai`.
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "keys", "set", "openai"],
        input=SECRET + "\n", capture_output=True, text=True, timeout=30, start_new_session=True, env=os.environ.copy(),
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    assert "GetPassWarning" not in proc.stderr and "echo" not in proc.stderr
    assert proc.stderr == ""
    assert "stored the key for openai" in proc.stdout
    assert SECRET not in proc.stdout
    listed = CliRunner().invoke(cli, ["keys", "list", "--json"])
    assert json.loads(listed.stdout)["providers"] == ["openai"]


# ------------------------------------------------------------------ start


async def test_start_with_an_explicit_port_that_is_taken_refuses(home: paths.Paths, fake: FakeAnthropic) -> None:
    write_config(home, anthropic_config(fake.url))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        r = await run_cli("start", "--port", str(port))

    assert r.rc == 1
    assert r.err == (
        f"error: port {port} on 127.0.0.1 is taken by another program; "
        f"choose another with --port, or start without --port to take the next free one\n"
    )
    assert read_state(home) is None


async def test_start_says_when_the_configured_port_was_taken(home: paths.Paths, fake: FakeAnthropic) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write_config(home, f"[server]\nport = {port}\n\n" + anthropic_config(fake.url))

        r = await run_cli("start")

    assert r.rc == 0, r.err
    state = read_state(home)
    assert state is not None and state["port"] != port
    assert f"port {port} was taken, so it listens on {state['port']}" in r.out


async def test_start_with_another_config_while_running_says_it_was_not_applied(
    home: paths.Paths, fake: FakeAnthropic, tmp_path: Path
) -> None:
    write_config(home, "[server]\nport = 0\n\n" + anthropic_config(fake.url))
    first = await run_cli("start")
    assert first.rc == 0, first.err
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 0\n\n" + anthropic_config(fake.url, '\n[budget]\ndaily_usd = 5\n'))

    same, again = await run_cli("start"), await run_cli("start", "--config", str(other))

    assert same.rc == 0 and "was already running" in same.out
    assert again.rc == 1
    assert "already running" in again.err
    assert f"{other} was NOT applied" in again.err
    assert "claude-sidecar stop && claude-sidecar start --config" in again.err


# ------------------------------------------------------------------ unknown paths behind the token


async def test_an_unknown_path_is_404_even_when_the_token_is_required(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    cfg = "[server]\nrequire_token = true\n" + anthropic_config(fake.url)
    async with sidecar_in_process(cfg, hermetic_env) as sc:
        async with client.get(sc.url + "/no/such/page") as resp:
            status, body = resp.status, json.loads(await resp.read())
        async with client.post(sc.url + "/v1/messages", json={}) as resp:
            known = resp.status

    assert status == 404
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert sc.token not in json.dumps(body)
    assert known == 401  # a real endpoint still needs the token
    assert fake.requests == []


# ------------------------------------------------------------------ config path NAME


def test_config_path_names_one_path_for_scripts() -> None:
    r = CliRunner().invoke(cli, ["config", "path", "logs"])
    bad = CliRunner().invoke(cli, ["config", "path", "nope"])

    assert (r.exit_code, r.stdout) == (0, f"{paths.resolve().log_file}\n")
    assert bad.exit_code == 2 and "'nope' is not one of" in bad.stderr
