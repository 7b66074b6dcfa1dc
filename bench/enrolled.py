"""A central server and an enrolled sidecar home, for benches that compare an enrolled
sidecar with an un-enrolled one in the same run (`bench/overhead.py --enrolled NAME`).

Synchronous on purpose: overhead.py starts its processes before its event loop runs.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import tempfile
from pathlib import Path

from sidecar.central.client import CentralClient
from sidecar.testing.harness import terminate

ROOT = Path(__file__).resolve().parents[1]


class Central:
    """`claude-sidecar central serve` on SQLite in a temp dir (stopped by `stop`)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sidecar-bench-central-"))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "central", "serve", "--db", f"sqlite:///{self.dir / 'central.db'}",
             "--port", "0", "--enroll-per-minute", "100000", "--auth-failures-per-minute", "100000"],
            stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url, self.token = "", ""
        while not self.url:
            ready, _, _ = select.select([self.proc.stdout], [], [], 30)
            line = self.proc.stdout.readline().decode() if ready else ""
            if not line:
                self.stop()
                raise RuntimeError("the central server did not start")
            if m := re.search(r"token \(shown once, keep it safe\): (\S+)", line):
                self.token = m.group(1)
            if m := re.search(r"listening on (\S+)", line):
                self.url = m.group(1)
        self.admin = CentralClient(self.url, self.token)

    def enroll(self, home: Path, email: str) -> None:
        """Create a developer and enroll the sidecar home `home` with the real CLI."""
        self.admin.call("POST", "/v1/admin/developers", {"email": email})
        token = self.admin.call("POST", "/v1/admin/enrollment-tokens", {"developer": email})["token"]
        home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CLAUDE_SIDECAR_HOME": str(home)}
        subprocess.run(
            [sys.executable, "-m", "sidecar", "enroll", self.url, "--token", token, "--name", email],
            env=env, check=True, capture_output=True,
        )  # fmt: skip

    def stop(self) -> None:
        """SIGTERM the server and wait."""
        terminate(self.proc)
