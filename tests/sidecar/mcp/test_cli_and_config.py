"""`claude-sidecar mcp add|list|test` and the [mcp] config section."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecar.cli import cli
from sidecar.cli.mcp_cmd import claude_mcp_add
from sidecar.config import parse
from sidecar.errors import ConfigError

from .conftest import TOY


def _config(home: Path) -> Path:
    return home / "config" / "config.toml"


def test_add_list_and_test_a_server(hermetic_env: Path) -> None:
    runner = CliRunner()
    cfg = _config(hermetic_env)
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text('[tools]\ndeny = ["mcp__toy__wipe", "mcp__toy__die"]\n')
    added = runner.invoke(cli, ["mcp", "add", "toy", "--env", "X=1", "--", sys.executable, str(TOY)])
    assert added.exit_code == 0, added.output
    server = parse(cfg.read_text(), cfg, {}).mcp.server("toy")
    assert server.command == sys.executable and server.args == (str(TOY),) and server.env == {"X": "1"}

    listed = runner.invoke(cli, ["mcp", "list"])
    assert listed.exit_code == 0 and "toy" in listed.output and "not running" in listed.output

    tested = runner.invoke(cli, ["mcp", "test"])
    assert tested.exit_code == 0, tested.output
    assert "toy: up" in tested.output and "2 denied by [tools]" in tested.output
    assert "toy__add" in tested.output and "toy__wipe" not in tested.output


def test_mcp_add_from_several_processes_at_once_keeps_every_server(hermetic_env: Path) -> None:
    """Each `mcp add` reads the config, appends its server and writes it back: a second one
    running at the same moment must not write over the first's server."""
    cfg = _config(hermetic_env)
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("# mine\n")
    cfg.chmod(0o640)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    procs = [
        subprocess.Popen([sys.executable, "-m", "sidecar", "mcp", "add", f"s{n}", "--url", f"http://127.0.0.1:1/mcp{n}"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for n in range(4)
    ]  # fmt: skip
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    added = parse(cfg.read_text(), cfg, {}).mcp
    assert sorted(s.name for s in added.servers) == ["s0", "s1", "s2", "s3"]
    assert cfg.read_text().startswith("# mine\n") and stat.S_IMODE(cfg.stat().st_mode) == 0o640


def test_add_refuses_what_the_config_would_refuse(hermetic_env: Path) -> None:
    runner = CliRunner()
    both = runner.invoke(cli, ["mcp", "add", "x", "--url", "http://127.0.0.1:1/mcp", "--", "node", "s.js"])
    assert both.exit_code == 1 and "exactly one of" in both.output
    bad_name = runner.invoke(cli, ["mcp", "add", "my_server", "--", "node"])
    assert bad_name.exit_code == 1 and "no '_'" in bad_name.output
    assert not _config(hermetic_env).exists() or "my_server" not in _config(hermetic_env).read_text()


def test_a_server_that_cannot_start_fails_mcp_test(hermetic_env: Path) -> None:
    cfg = _config(hermetic_env)
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text('[[mcp.servers]]\nname = "gone"\ncommand = "/nonexistent/mcp-server"\n')
    result = CliRunner().invoke(cli, ["mcp", "test", "--timeout", "10"])
    assert result.exit_code == 1 and "gone: down" in result.output


def test_register_command_carries_the_token_header() -> None:
    line = claude_mcp_add("http://127.0.0.1:8787", "tok123")
    assert line == "claude mcp add --transport http --scope user sidecar http://127.0.0.1:8787/mcp --header 'x-sidecar-token: tok123'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[mcp.servers]]\nname = "a"\n', "exactly one of"),
        ('[[mcp.servers]]\nname = "a"\nurl = "ftp://x"\n', "http(s) URL"),
        ('[[mcp.servers]]\nname = "a"\ncommand = "x"\n[[mcp.servers]]\nname = "a"\ncommand = "y"\n', "two servers"),
        ('[mcp]\nscript_steps = 0\n', "positive"),
        ('[[mcp.servers]]\nname = "a"\ncommand = "x"\nenv = { A = 1 }\n', "must be a string"),
        ('[[mcp.servers]]\nname = "a"\ncommand = "x"\nport = 1\n', "unknown key"),
    ],
)
def test_config_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="mcp") as e:
        parse(text, Path("/c.toml"), {})
    assert message in str(e.value)


class _Daemon:
    url = "http://127.0.0.1:8787"
    token = "t"

    def __init__(self, types: list[str]) -> None:
        self.types = types

    def call(self, method: str, path: str, timeout: float = 5.0) -> object:
        return {"token_required_on_proxy": False, "providers": [{"type": t, "credentials": "client"} for t in self.types]}


@pytest.mark.parametrize(
    ("types", "environ", "expected"),
    [
        (["anthropic"], {}, "true"),  # Claude Code keeps its MCP tool search on behind the sidecar
        (["anthropic", "openai"], {}, None),  # a translated provider has no tool search
        (["anthropic"], {"ENABLE_TOOL_SEARCH": "false"}, None),  # the user's choice stands
    ],
)
def test_env_turns_claude_codes_tool_search_on_for_anthropic_providers(types: list[str], environ: dict[str, str], expected: str | None) -> None:
    from sidecar.cli import daemon

    env = daemon.client_env(_Daemon(types), environ)  # type: ignore[arg-type]
    assert env.get("ENABLE_TOOL_SEARCH") == expected
