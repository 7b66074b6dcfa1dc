"""The sync loop the daemon owns: opened and closed with the app, never on a request's path.

While this sidecar is enrolled (``data/central.json`` and the device credential) and
``[sync] enabled``, `SyncService` runs three parts side by side:

- `policy.PolicySync`: long-polls the signed policy, verifies it with the pinned key,
  keeps the last good one on disk and installs it (routes, budgets, limits, guardrails,
  tool rules) through `install`, without a restart;
- `outbox.Uploader`: uploads every ledger row queued by the outbox trigger, once;
- `leases.LeaseManager`: holds this device's slice of the team's and org's shared budgets,
  which the policy gate enforces next to the local budgets.

and reports to the server which policy it enforces and how large its backlog is. The
enrollment file is watched: `claude-sidecar enroll` or `unenroll` while the daemon runs
takes effect within a second. `state()` is what `status`, the TUI and the tray show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sidecar.central import enrollment
from sidecar.central.enrollment import Enrollment
from sidecar.config import Config
from sidecar.paths import Paths, file_stamp
from sidecar.policy.gate import PolicyGate
from sidecar.sync.client import DeviceClient, SyncError
from sidecar.sync.leases import LeaseManager
from sidecar.sync.outbox import Uploader
from sidecar.sync.policy import CentralPolicy, OrgSync, PolicySync, policy_file
from sidecar.tasks import TaskSet

log = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0
REPORT_INTERVAL = 30.0

Install = Callable[[CentralPolicy | None], None]  # put a central policy (None: none) in force now
Publish = Callable[[str, dict[str, Any]], None]


class SyncService:
    """Enrollment-driven: idle while not enrolled, the three parts while enrolled."""

    def __init__(self, cfg: Config, paths: Paths, gate: PolicyGate, install: Install, publish: Publish) -> None:
        self.cfg = cfg
        self.paths = paths
        self.gate = gate
        self.install = install
        self.publish = publish
        self.enrollment: Enrollment | None = None
        self.client: DeviceClient | None = None
        self.policy: PolicySync | None = None
        self.uploader: Uploader | None = None
        self.leases: LeaseManager | None = None
        self.problem: str | None = None  # why an enrolled sidecar does not sync
        self._tasks: TaskSet | None = None
        self._watch = TaskSet()
        self._stamp = file_stamp(enrollment.enrollment_file(self.paths))
        self._reported_backlog: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start syncing if enrolled (the last good policy is in force when this returns),
        then watch the enrollment file."""
        await self._begin()
        self._watch.spawn(self._watch_enrollment(), name="sync-enrollment-watch")

    async def close(self) -> None:
        """Stop the loop; leases give back what they did not use (bounded)."""
        await self._watch.close()
        await self._end()

    async def _begin(self) -> None:
        self.problem = None
        record = await asyncio.to_thread(enrollment.load, self.paths)
        self.enrollment = record
        if record is None:
            return
        if not self.cfg.sync.enabled:
            self.problem = "disabled in the config ([sync] enabled = false)"
            return
        credential = await asyncio.to_thread(enrollment.secret_store(self.paths).get, enrollment.CREDENTIAL_NAME)
        if not credential:
            self.problem = f"the device credential is missing from the credential store; run claude-sidecar enroll {record.url} --token T --force"
            log.error("sync: %s", self.problem)
            return
        self.client = DeviceClient(record.url, credential)
        self.policy = PolicySync(self.client, record, self.paths, self.cfg.sync, self._install, self.publish)
        self.uploader = Uploader(self.paths.db_file, self.client, self.cfg.sync, self.publish)
        self.leases = LeaseManager(self.client, self.publish)
        await asyncio.to_thread(Uploader.enable, self.paths.db_file)  # before any request is served
        held = self.policy.load_last_good()  # on the loop: installing touches the router, gate and bus
        if held is None:
            self._configure_leases(None)
        self.gate.leases = self.leases
        self.gate.closed = self.policy.closed_reason  # stale past the org's grace and "closed": refuse
        self._tasks = TaskSet()
        self._tasks.spawn(self.policy.run(), name="sync-policy")
        self._tasks.spawn(self.uploader.run(), name="sync-outbox")
        self._tasks.spawn(self.leases.run(), name="sync-leases")
        self._tasks.spawn(self._report_loop(), name="sync-report")
        log.info("sync: enrolled with %s as %s", record.url, record.device_id)
        self.publish("sync_changed", self.state())

    async def _end(self) -> None:
        if self._tasks is not None:
            await self._tasks.close()
            self._tasks = None
        if self.leases is not None:
            with contextlib.suppress(SyncError):
                await asyncio.wait_for(self.leases.close(), 5.0)
            self.gate.leases = None
        self.gate.closed = None
        if self.client is not None:
            await self.client.close()
        self.client = self.policy = self.uploader = self.leases = None

    async def _watch_enrollment(self) -> None:
        """Enroll / unenroll while running: restart the parts with the new record."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            stamp = file_stamp(enrollment.enrollment_file(self.paths))
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            was = self.enrollment
            await self._end()
            if stamp is None and was is not None:
                log.info("sync: unenrolled from %s; the local config's policy is in force again", was.url)
                await asyncio.to_thread(_forget, self.paths)
                self._install(None)
                self.enrollment = None
            else:
                await self._begin()
            self.publish("sync_changed", self.state())

    # ------------------------------------------------------------------ policy

    def _install(self, central: CentralPolicy | None) -> None:
        """Install a verified policy (or none) and size the leases by its org settings."""
        self.install(central)  # ConfigError: PolicySync refuses this version and keeps the previous one
        self._configure_leases(central)

    def _configure_leases(self, central: CentralPolicy | None) -> None:
        if self.leases is None:
            return
        org = central.sync if central is not None else OrgSync()
        self.leases.configure(org.lease_usd, org.lease_ttl_seconds)

    # ------------------------------------------------------------------ reporting

    async def _report_loop(self) -> None:
        """Tell the server how this device syncs: its backlog, when it changed (the policy
        part reports versions itself)."""
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            if self.client is None or self.uploader is None:
                continue
            backlog = self.uploader.state().get("backlog")
            if isinstance(backlog, int) and backlog != self._reported_backlog:
                with contextlib.suppress(SyncError):
                    await self.client.report({"outbox_backlog": backlog})
                    self._reported_backlog = backlog

    def state(self) -> dict[str, Any]:
        """Enrollment, server, policy version and age, last sync, backlog and leases."""
        record = self.enrollment
        if record is None:
            return {"enrolled": False, "state": "not enrolled"}
        out: dict[str, Any] = {
            "enrolled": True,
            "server": record.url,
            "device_id": record.device_id,
            "key_id": record.key_id,
            "enrolled_at": record.enrolled_at,
        }
        if self.problem or self.policy is None:
            out["state"] = "off: " + (self.problem or "not running")
            return out
        policy = self.policy.state()
        out["policy"] = policy
        out["outbox"] = self.uploader.state() if self.uploader else None
        out["leases"] = self.leases.state() if self.leases else None
        out["state"] = _summary(policy, time.time())
        return out


def _summary(policy: dict[str, Any], now: float) -> str:
    """One phrase for the TUI header and the tray: synced vN / offline since ... / refused."""
    version = policy.get("version")
    if policy.get("closed"):
        return "closed: policy too old"
    if policy.get("error"):
        return f"v{version}, {policy['error']}" if version is not None else str(policy["error"])
    if version is None:
        return "connecting"
    return f"synced v{version}"


def _forget(paths: Paths) -> None:
    """Unenrolled: the outbox stops queueing and is emptied; the held policy is dropped."""
    Uploader.disable(paths.db_file)
    policy_file(paths).unlink(missing_ok=True)
