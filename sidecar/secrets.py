"""Provider credentials: the OS keyring, with an explicit, announced 0600-file fallback.

Lookup order for a provider's key: ``CLAUDE_SIDECAR_<PROVIDER>_API_KEY``, then the
provider's configured `keys` entries (``env:VAR`` or ``keyring:NAME``), then the keyring
entry named after the provider. No key at all means the sidecar forwards the client's own
credentials. Values are never printed or logged.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sidecar.errors import ConfigError
from sidecar.paths import locked, replace_file
from sidecar.providers.config import ProviderConfig

SERVICE = "claude-sidecar"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedKey:
    """A credential and where it came from (the source is safe to show, the value is not)."""

    value: str
    source: str


def _keyring_usable() -> bool:
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return False
    kr = keyring.get_keyring()
    if isinstance(kr, fail.Keyring) or type(kr).__module__.startswith("keyring.backends.null"):
        return False
    return getattr(kr, "priority", 1) > 0


class SecretStore:
    """Stores credentials in the keyring, or in a 0600 JSON file when no keyring is usable."""

    def __init__(self, fallback_file: Path) -> None:
        self.fallback_file = fallback_file
        self.uses_keyring = _keyring_usable()

    @property
    def where(self) -> str:
        """A description of the backend, for messages."""
        if self.uses_keyring:
            import keyring

            return f"the OS keyring ({type(keyring.get_keyring()).__name__})"
        return f"{self.fallback_file} (mode 0600; no OS keyring is available)"

    def _read_file(self) -> dict[str, str]:
        try:
            data = json.loads(self.fallback_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.fallback_file}: cannot read stored credentials: {e}") from None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _write_file(self, data: dict[str, str]) -> None:
        self.fallback_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        replace_file(self.fallback_file, json.dumps(data))

    def get(self, name: str) -> str | None:
        """The stored credential called `name`, if any."""
        if self.uses_keyring:
            import keyring

            return keyring.get_password(SERVICE, name)
        return self._read_file().get(name)

    def set(self, name: str, value: str) -> None:
        """Store `value` as the credential called `name`."""
        if self.uses_keyring:
            import keyring

            keyring.set_password(SERVICE, name, value)
            self._remember(name, add=True)
        else:
            with self._locked():
                data = self._read_file()
                data[name] = value
                self._write_file(data)

    def delete(self, name: str) -> bool:
        """Remove the credential called `name`; False when there was none."""
        if self.uses_keyring:
            import keyring
            from keyring.errors import PasswordDeleteError

            try:
                keyring.delete_password(SERVICE, name)
            except PasswordDeleteError:
                return False
            self._remember(name, add=False)
            return True
        with self._locked():
            data = self._read_file()
            if name not in data:
                return False
            del data[name]
            self._write_file(data)
        return True

    def names(self) -> list[str]:
        """Names of stored credentials (keyrings cannot list, so we keep an index of names)."""
        if self.uses_keyring:
            return sorted(self._index())
        return sorted(self._read_file())

    def _index_file(self) -> Path:
        return self.fallback_file.with_name("keyring-index.json")

    def _index(self) -> builtins.set[str]:
        try:
            return set(json.loads(self._index_file().read_text()))
        except (FileNotFoundError, ValueError):
            return set()

    def _remember(self, name: str, add: bool) -> None:
        with self._locked():
            names = self._index()
            (names.add if add else names.discard)(name)
            replace_file(self._index_file(), json.dumps(sorted(names)))

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        """The lock around a change of the credentials file or the keyring's index of names
        (another `keys set` may be changing it at the same moment)."""
        return locked(self.fallback_file.with_name("credentials.lock"))


def env_var_for(provider: str) -> str:
    """The environment variable that overrides a provider's key."""
    return "CLAUDE_SIDECAR_" + provider.upper().replace("-", "_") + "_API_KEY"


def resolve_keys(provider: ProviderConfig, store: SecretStore, env: dict[str, str] | None = None) -> list[ResolvedKey]:
    """The credentials the sidecar injects for `provider`; empty means forward the client's."""
    env = dict(os.environ) if env is None else env
    var = env_var_for(provider.name)
    if env.get(var):
        return [ResolvedKey(env[var], f"env:{var}")]
    out: list[ResolvedKey] = []
    for spec in provider.keys:
        kind, _, name = spec.partition(":")
        value = env.get(name) if kind == "env" else store.get(name)
        if not value:
            raise ConfigError(
                f"provider {provider.name!r}: key {spec!r} is not set"
                + (f" (run: claude-sidecar keys set {name})" if kind == "keyring" else f" (export {name})")
            )
        out.append(ResolvedKey(value, spec))
    if not out:
        value = store.get(provider.name)
        if value:
            out.append(ResolvedKey(value, f"keyring:{provider.name}"))
    return out
