"""A throwaway PostgreSQL 15 cluster in a temporary directory, for tests and benchmarks.

PostgreSQL refuses to run as root, and tests and CI run as root here: the cluster is then
created and run as the unprivileged user `nobody`. fsync is off: nothing here must survive
a crash. Binaries come from /usr/lib/postgresql/15/bin (Debian's `postgresql` package;
./scripts/test installs it when missing) or CLAUDE_SIDECAR_PG_BIN.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

PG_BIN = Path(os.environ.get("CLAUDE_SIDECAR_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    """Whether the PostgreSQL binaries are installed."""
    return (PG_BIN / "initdb").exists()


def free_port() -> int:
    """A loopback port free at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demote() -> Callable[[], None] | None:
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")

    def preexec() -> None:
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    return preexec


class PgCluster:
    """Start with `with PgCluster() as pg:`; `pg.url()` connects as the superuser."""

    def __init__(self, max_connections: int = 300) -> None:
        self.max_connections = max_connections
        self.port = 0
        self.root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._counter = itertools.count()

    def url(self, db: str = "postgres") -> str:
        """The connection URL of database `db`."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    async def new_database(self) -> str:
        """A fresh, empty schema in the shared test database; a URL that uses it.

        A schema costs milliseconds where CREATE DATABASE costs a checkpoint; asyncpg passes
        the URL's `search_path` to the server, so the store sees an empty database."""
        import asyncpg

        name = f"t{os.getpid()}_{next(self._counter)}"
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f"CREATE SCHEMA {name}")
        finally:
            await conn.close()
        return self.url() + f"?search_path={name}"

    def start(self) -> PgCluster:
        """initdb and start the server; return once it accepts connections."""
        if not available():
            raise RuntimeError(f"PostgreSQL 15 is not installed ({PG_BIN}/initdb missing): apt-get install postgresql")
        # As root the cluster runs as `nobody`, who must be able to reach it: /tmp, not a
        # TMPDIR that may sit in root's private directories.
        where = "/tmp" if os.geteuid() == 0 and os.path.isdir("/tmp") else None
        self.root = root = Path(tempfile.mkdtemp(prefix="sidecar-pg-", dir=where))
        data, sock = root / "data", root / "sock"
        sock.mkdir()
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for p in (root, sock):
                os.chown(p, nobody.pw_uid, nobody.pw_gid)
        subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, preexec_fn=_demote(), cwd=root,
        )  # fmt: skip
        self.port = free_port()
        self._log = open(root / "postgres.log", "wb")  # closed in stop()
        self._proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(sock),
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", f"max_connections={self.max_connections}"],
            stdout=subprocess.DEVNULL, stderr=self._log, preexec_fn=_demote(), cwd=root,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(root / 'postgres.log').read_text()}")
            ready = subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"], check=False)
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError("postgres did not become ready in 30 s")

    def stop(self) -> None:
        """Stop the server (by its pid) and delete the cluster."""
        if self._proc is not None:
            # SIGINT is PostgreSQL's fast shutdown: it disconnects clients instead of
            # waiting for them to leave (SIGTERM).
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PgCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
