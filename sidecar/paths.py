"""Every file location the sidecar uses.

platformdirs decides the per-user directories; ``CLAUDE_SIDECAR_HOME=DIR`` puts all of
them under DIR (tests and portable installs use this), and ``CLAUDE_SIDECAR_CONFIG``
names the config file directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "claude-sidecar"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paths:
    """The directories and files of one sidecar installation."""

    config_dir: Path
    data_dir: Path
    state_dir: Path
    log_dir: Path
    cache_dir: Path
    config_override: Path | None = None

    @property
    def config_file(self) -> Path:
        """The TOML config the daemon and the CLI read."""
        return self.config_override or self.config_dir / "config.toml"

    @property
    def db_file(self) -> Path:
        """The sqlite store (usage ledger, later cache and audit)."""
        return self.data_dir / "sidecar.db"

    @property
    def state_file(self) -> Path:
        """JSON written by a running daemon: pid, address, port, start time."""
        return self.state_dir / "sidecar.json"

    @property
    def token_file(self) -> Path:
        """The local token (mode 0600) for the control API and injected-key proxying."""
        return self.state_dir / "token"

    @property
    def socket_file(self) -> Path:
        """Default path of the optional Unix socket listener."""
        return self.state_dir / "sidecar.sock"

    @property
    def log_file(self) -> Path:
        """Where a background daemon writes its log."""
        return self.log_dir / "sidecar.log"

    def ensure(self) -> None:
        """Create every directory, private to the user; an existing one that others may read
        or write (say 0777) is tightened to 0700, and the log says so."""
        for d in (self.config_dir, self.data_dir, self.state_dir, self.log_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            make_private(d, 0o700)


def file_stamp(path: Path) -> tuple[float, int] | None:
    """(mtime, size) of `path`, None when it is missing: what file watchers compare."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime, st.st_size)


def replace_file(path: Path, data: bytes | str, mode: int | None = 0o600, durable: bool = False) -> None:
    """Write `path` whole or not at all: `data` goes to a new file beside it, which then takes
    its place, so a reader (the config watcher, another process) never sees it half-written
    and two writers at once leave one's data whole, never a mix. The file gets `mode`; None
    keeps the mode of the file it replaces (0600 when there is none). A symlink is followed:
    its target is replaced, the link stays. `durable`: on disk (fsync) before it replaces."""
    path = Path(os.path.realpath(path))
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            mode = 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if os.name == "posix":
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (made if missing), waiting for another
    process that holds it: a read-modify-write of a shared file (two `keys set` at once)
    then never loses the other's change."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        lock_fd(fd, wait=True)
        yield
    finally:
        os.close(fd)  # and the lock with it


def lock_fd(fd: int, wait: bool) -> None:
    """Take an exclusive lock on the open file `fd` (released when it is closed); without
    `wait`, OSError at once when another process holds it."""
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)  # LK_LOCK retries for 10 s
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)


def make_private(path: Path, mode: int) -> bool:
    """Tighten `path` (ours) to `mode` when group or others have any access; True if it was."""
    if os.name != "posix":
        return False  # Windows: the profile directory's ACLs already keep others out
    st = path.stat()
    if not st.st_mode & 0o077 or st.st_uid != os.geteuid():
        return False
    os.chmod(path, mode)
    # Others could write (0777, 0666): say so loudly. Only read (a 0755 from an editor): quietly.
    level = logging.WARNING if st.st_mode & 0o022 else logging.INFO
    log.log(level, "%s was mode %o (open to other users); tightened to %o", path, st.st_mode & 0o777, mode)
    return True


def resolve(env: dict[str, str] | None = None) -> Paths:
    """The paths for this process, honouring CLAUDE_SIDECAR_HOME and CLAUDE_SIDECAR_CONFIG."""
    env = dict(os.environ) if env is None else env
    override = Path(env["CLAUDE_SIDECAR_CONFIG"]).expanduser() if env.get("CLAUDE_SIDECAR_CONFIG") else None
    home = env.get("CLAUDE_SIDECAR_HOME")
    if home:
        root = Path(home).expanduser().resolve()
        return Paths(
            config_dir=root / "config",
            data_dir=root / "data",
            state_dir=root / "state",
            log_dir=root / "logs",
            cache_dir=root / "cache",
            config_override=override,
        )
    return Paths(
        config_dir=Path(platformdirs.user_config_dir(APP, appauthor=False)),
        data_dir=Path(platformdirs.user_data_dir(APP, appauthor=False)),
        state_dir=Path(platformdirs.user_state_dir(APP, appauthor=False)),
        log_dir=Path(platformdirs.user_log_dir(APP, appauthor=False)),
        cache_dir=Path(platformdirs.user_cache_dir(APP, appauthor=False)),
        config_override=override,
    )
