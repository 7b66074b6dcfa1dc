"""`config init|check|path` and `keys set|list|rm`: files written, one-line errors, secrets never shown."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import keyring
import keyring.core
import pytest
from click.testing import CliRunner, Result

from sidecar import paths
from sidecar.cli import cli
from sidecar.config import DEFAULT_CONFIG
from sidecar.secrets import SERVICE

SECRET = "sk-ant-api03-never-show-me"


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def all_output(r: Result) -> str:
    return r.stdout + r.stderr


@pytest.fixture
def cfg_file() -> Path:
    return paths.resolve().config_file


def write_config(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ------------------------------------------------------------------ config init / check


def test_init_writes_the_commented_default_that_check_accepts(cfg_file: Path) -> None:
    r = invoke("config", "init")

    assert r.exit_code == 0, r.output
    assert r.stdout == f"wrote {cfg_file}\n"
    assert cfg_file.read_text() == DEFAULT_CONFIG
    assert DEFAULT_CONFIG.count("\n# ") > 5  # commented: it documents itself
    check = invoke("config", "check")
    assert check.exit_code == 0, check.output
    assert check.stdout.splitlines()[-1] == f"ok: {cfg_file}"
    assert "provider anthropic: https://api.anthropic.com (forwards the client's credentials)" in check.stdout


def test_init_refuses_to_overwrite_without_force(cfg_file: Path) -> None:
    write_config(cfg_file, "[server]\nport = 9000\n")

    r = invoke("config", "init")

    assert r.exit_code == 1
    assert f"{cfg_file} already exists (use --force to overwrite)" in r.stderr
    assert cfg_file.read_text() == "[server]\nport = 9000\n"
    forced = invoke("config", "init", "--force")
    assert forced.exit_code == 0, forced.output
    assert cfg_file.read_text() == DEFAULT_CONFIG


def test_init_honours_claude_sidecar_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "custom" / "sidecar.toml"
    monkeypatch.setenv("CLAUDE_SIDECAR_CONFIG", str(target))

    r = invoke("config", "init")

    assert r.exit_code == 0, r.output
    assert target.read_text() == DEFAULT_CONFIG


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[server]\nport = true\n", ":2: server.port: must be an integer, not a boolean"),
        ('[server]\nport = 8787\nhost = "127.0.0.1\n', ":3: not valid TOML: "),
        ('[[providers]]\nname = "anthropic"\ntype = "anthropic"\nbase_url = "nope"\n', ":4: providers[0].base_url: "),
    ],
    ids=["wrong-type", "bad-syntax", "bad-url"],
)
def test_check_on_a_broken_file_is_one_line_and_exit_1(cfg_file: Path, text: str, where: str) -> None:
    write_config(cfg_file, text)

    r = invoke("config", "check")

    assert r.exit_code == 1
    assert isinstance(r.exception, SystemExit)
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: {cfg_file}{where}")
    assert "Traceback" not in r.output


def test_check_names_a_missing_key(cfg_file: Path) -> None:
    write_config(cfg_file, '[[providers]]\nname = "anthropic"\ntype = "anthropic"\nkeys = ["keyring:work"]\n')

    r = invoke("config", "check")

    assert r.exit_code == 1
    assert r.stderr == (
        "error: provider 'anthropic': key 'keyring:work' is not set (run: claude-sidecar keys set work)\n"
    )


def test_check_without_a_file_reports_defaults(cfg_file: Path) -> None:
    r = invoke("config", "check")

    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == f"ok: {cfg_file} (absent: defaults)"


def test_check_shows_where_keys_come_from_never_their_values(cfg_file: Path) -> None:
    write_config(cfg_file, '[[providers]]\nname = "anthropic"\ntype = "anthropic"\nkeys = ["keyring:work"]\n')
    assert invoke("keys", "set", "work", "--stdin", input=SECRET + "\n").exit_code == 0

    r = invoke("config", "check")

    assert r.exit_code == 0, r.output
    assert "(keyring:work)" in r.stdout
    assert SECRET not in all_output(r)


# ------------------------------------------------------------------ config path


def test_path_json_lists_every_location(hermetic_env: Path) -> None:
    r = invoke("config", "path", "--json")

    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert set(data) == {"config", "database", "state", "token", "logs", "cache"}
    for value in data.values():
        assert Path(value).is_relative_to(hermetic_env.resolve()), value
    p = paths.resolve()
    assert data["config"] == str(p.config_file)
    assert data["token"] == str(p.token_file)
    assert data["state"] == str(p.state_file)


def test_path_follows_claude_sidecar_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_SIDECAR_CONFIG", str(tmp_path / "other.toml"))

    data = json.loads(invoke("config", "path", "--json").stdout)

    assert data["config"] == str(tmp_path / "other.toml")


def test_path_as_text() -> None:
    r = invoke("config", "path")

    assert r.exit_code == 0, r.output
    assert [line.split()[0] for line in r.stdout.splitlines()] == [
        "config", "database", "state", "token", "logs", "cache"
    ]


# ------------------------------------------------------------------ keys


def test_keys_set_list_rm_never_show_the_value(tmp_path: Path) -> None:
    outputs = []

    r = invoke("keys", "set", "anthropic", "--stdin", input=SECRET + "\n")
    outputs.append(r)
    assert r.exit_code == 0, r.output
    assert "stored the key for anthropic in the OS keyring" in r.stdout
    assert keyring.get_password(SERVICE, "anthropic") == SECRET

    r = invoke("keys", "list")
    outputs.append(r)
    assert r.exit_code == 0, r.output
    assert r.stdout == "anthropic  (override with CLAUDE_SIDECAR_ANTHROPIC_API_KEY)\n"

    r = invoke("keys", "list", "--json")
    outputs.append(r)
    assert json.loads(r.stdout)["providers"] == ["anthropic"]

    r = invoke("keys", "rm", "anthropic")
    outputs.append(r)
    assert r.exit_code == 0, r.output
    assert r.stdout == "removed the key for anthropic\n"
    assert keyring.get_password(SERVICE, "anthropic") is None

    r = invoke("keys", "list")
    outputs.append(r)
    assert r.stdout.startswith("no keys stored")

    for r in outputs:
        assert SECRET not in all_output(r)


def test_keys_set_prompts_with_hidden_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sidecar.cli.keys_cmd._stdin_is_terminal", lambda: True)  # CliRunner's stdin is a pipe
    r = invoke("keys", "set", "anthropic", input=SECRET + "\n")

    assert r.exit_code == 0, r.output
    assert "API key for anthropic" in r.output
    assert SECRET not in all_output(r)
    assert keyring.get_password(SERVICE, "anthropic") == SECRET


def test_keys_set_refuses_an_empty_key() -> None:
    r = invoke("keys", "set", "anthropic", "--stdin", input="\n")

    assert r.exit_code == 1
    assert "an empty key was given; nothing stored" in r.stderr
    assert keyring.get_password(SERVICE, "anthropic") is None


def test_keys_rm_of_an_unknown_provider_fails() -> None:
    r = invoke("keys", "rm", "nobody")

    assert r.exit_code == 1
    assert "no key stored for nobody" in r.stderr


def test_keys_without_a_keyring_warn_and_use_a_0600_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    keyring.core._keyring_backend = None
    store_file = paths.resolve().config_dir / "credentials.json"

    r = invoke("keys", "set", "anthropic", "--stdin", input=SECRET + "\n")

    assert r.exit_code == 0, r.output
    assert f"stored the key for anthropic in {store_file} (mode 0600" in r.stdout
    assert "warning: no OS keyring is available" in r.stderr
    assert stat.S_IMODE(store_file.stat().st_mode) == 0o600
    listed = invoke("keys", "list", "--json")
    assert json.loads(listed.stdout)["providers"] == ["anthropic"]
    assert SECRET not in all_output(r) + all_output(listed)
