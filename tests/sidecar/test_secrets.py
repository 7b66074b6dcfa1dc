"""Provider credentials: keyring or a 0600 file, lookup order, and errors that name what to set."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import keyring
import keyring.core
import pytest

from sidecar.errors import ConfigError
from sidecar.providers.config import ProviderConfig
from sidecar.secrets import SERVICE, ResolvedKey, SecretStore, env_var_for, resolve_keys

SECRET = "sk-ant-api03-very-secret-value"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def provider(name: str = "anthropic", keys: tuple[str, ...] = ()) -> ProviderConfig:
    return ProviderConfig(name=name, type="anthropic", base_url="https://api.anthropic.com", keys=keys)


@pytest.fixture
def no_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without a usable OS keyring (keyring's own `fail` backend)."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    keyring.core._keyring_backend = None


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "credentials.json"


# ------------------------------------------------------------------ file fallback


@pytest.mark.usefixtures("no_keyring")
def test_without_a_keyring_the_store_is_a_0600_file(store_file: Path) -> None:
    store = SecretStore(store_file)

    assert store.uses_keyring is False
    assert str(store_file) in store.where and "0600" in store.where
    store.set("anthropic", SECRET)

    assert mode(store_file) == 0o600
    assert mode(store_file.parent) == 0o700
    assert json.loads(store_file.read_text()) == {"anthropic": SECRET}
    assert SecretStore(store_file).get("anthropic") == SECRET
    assert store.names() == ["anthropic"]


@pytest.mark.usefixtures("no_keyring")
def test_the_file_stays_0600_when_rewritten(store_file: Path) -> None:
    store_file.parent.mkdir(parents=True)
    store_file.write_text("{}")
    store_file.chmod(0o644)  # e.g. restored from a backup
    store = SecretStore(store_file)

    store.set("a", "1")
    store.set("b", "2")
    assert mode(store_file) == 0o600
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert mode(store_file) == 0o600
    assert store.names() == ["b"]
    assert store.get("a") is None


@pytest.mark.usefixtures("no_keyring")
def test_values_are_never_printed_or_logged(
    store_file: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = SecretStore(store_file)

    store.set("anthropic", SECRET)
    store.get("anthropic")
    store.names()
    resolve_keys(provider(), store, {})
    store.delete("anthropic")

    out, err = capsys.readouterr()
    assert SECRET not in out + err + caplog.text


@pytest.mark.usefixtures("no_keyring")
def test_a_corrupt_file_is_a_clear_error(store_file: Path) -> None:
    store_file.parent.mkdir(parents=True)
    store_file.write_text("{not json")

    with pytest.raises(ConfigError, match=rf"^{store_file}: cannot read stored credentials"):
        SecretStore(store_file).get("anthropic")


SETTER = """
import sys
from pathlib import Path
from sidecar.secrets import SecretStore
path, me, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
store = SecretStore(path)
assert not store.uses_keyring
for i in range(n):
    store.set(f"{me}-{i}", f"secret-{me}-{i}")
store.delete(f"{me}-0")
"""


@pytest.mark.usefixtures("no_keyring")
def test_keys_set_from_several_processes_at_once_are_all_kept(store_file: Path) -> None:
    """Each `keys set` reads the file, adds its key and writes the file back: without a lock
    between processes, one writes over the other's key."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", SETTER, str(store_file), f"p{n}", "25"], env=env) for n in range(4)]
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    want = sorted(f"p{n}-{i}" for n in range(4) for i in range(1, 25))
    assert SecretStore(store_file).names() == want
    assert mode(store_file) == 0o600


# ------------------------------------------------------------------ keyring


def test_the_keyring_is_used_when_there_is_one(store_file: Path, tmp_path: Path) -> None:
    store = SecretStore(store_file)

    assert store.uses_keyring is True
    assert "keyring" in store.where and "FileKeyring" in store.where
    store.set("anthropic", SECRET)
    store.set("openai", "sk-other")

    assert keyring.get_password(SERVICE, "anthropic") == SECRET
    assert store.get("anthropic") == SECRET
    assert store.names() == ["anthropic", "openai"]  # keyrings cannot list: an index of names
    assert not store_file.exists()  # no plain-text copy
    for f in store_file.parent.glob("*"):
        assert SECRET not in f.read_text(), f
    assert store.delete("anthropic") is True
    assert store.delete("anthropic") is False
    assert store.get("anthropic") is None
    assert store.names() == ["openai"]
    assert SECRET not in (tmp_path / "test-keyring.json").read_text()


# ------------------------------------------------------------------ resolve_keys


@pytest.fixture
def store(store_file: Path) -> SecretStore:
    s = SecretStore(store_file)
    s.set("work", "from-keyring-work")
    s.set("anthropic", "from-keyring-anthropic")
    return s


def test_the_environment_override_comes_first(store: SecretStore) -> None:
    env = {"CLAUDE_SIDECAR_ANTHROPIC_API_KEY": "from-env-override", "MY_KEY": "from-env-var"}

    keys = resolve_keys(provider(keys=("keyring:work", "env:MY_KEY")), store, env)

    assert keys == [ResolvedKey("from-env-override", "env:CLAUDE_SIDECAR_ANTHROPIC_API_KEY")]


def test_configured_keys_come_next_in_order(store: SecretStore) -> None:
    keys = resolve_keys(provider(keys=("env:MY_KEY", "keyring:work")), store, {"MY_KEY": "from-env-var"})

    assert keys == [
        ResolvedKey("from-env-var", "env:MY_KEY"),
        ResolvedKey("from-keyring-work", "keyring:work"),
    ]


def test_the_keyring_entry_named_after_the_provider_comes_last(store: SecretStore) -> None:
    assert resolve_keys(provider(), store, {}) == [
        ResolvedKey("from-keyring-anthropic", "keyring:anthropic")
    ]
    assert resolve_keys(provider("other"), store, {}) == []  # nothing: forward the client's


def test_the_override_variable_is_named_after_the_provider(store: SecretStore) -> None:
    assert env_var_for("my-proxy") == "CLAUDE_SIDECAR_MY_PROXY_API_KEY"
    keys = resolve_keys(provider("my-proxy"), store, {"CLAUDE_SIDECAR_MY_PROXY_API_KEY": "v"})
    assert keys == [ResolvedKey("v", "env:CLAUDE_SIDECAR_MY_PROXY_API_KEY")]


def test_the_process_environment_is_used_when_none_is_given(
    store: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_SIDECAR_ANTHROPIC_API_KEY", "from-os-environ")

    assert resolve_keys(provider(), store)[0].value == "from-os-environ"


def test_a_missing_keyring_entry_says_how_to_set_it(store: SecretStore) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_keys(provider(keys=("keyring:work", "keyring:personal")), store, {})

    assert e.value.message == (
        "provider 'anthropic': key 'keyring:personal' is not set (run: claude-sidecar keys set personal)"
    )


@pytest.mark.parametrize("env", [{}, {"MY_KEY": ""}], ids=["unset", "empty"])
def test_a_missing_env_var_says_what_to_export(store: SecretStore, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_keys(provider(keys=("env:MY_KEY",)), store, env)

    assert e.value.message == "provider 'anthropic': key 'env:MY_KEY' is not set (export MY_KEY)"
    assert "from-keyring" not in str(e.value)


def test_no_keyring_backend_module_is_a_fallback_not_a_crash(
    store_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    keyring.core._keyring_backend = None

    store = SecretStore(store_file)
    store.set("anthropic", SECRET)

    assert store.uses_keyring is False
    assert mode(store_file) == 0o600
    assert os.path.exists(store_file)
