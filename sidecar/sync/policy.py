"""The org's signed policy: long-polled, verified, kept on disk, put in force, reported.

Every envelope is verified with the key pinned at enrollment (`signing.verify_envelope`:
the signature, the device id, and no version older than the one held) before it can
replace the running policy; one that fails, or that cannot be applied, is refused: the
previous policy stays in force and the reason goes to `state()`, the event bus and the
server (``POST /v1/device/status``). The last good envelope is kept in the data dir
(``policy.json``, 0600, written atomically) and verified again at start, before the
sidecar serves, so a restart without the server comes up under the org's rules and a file
edited on disk is refused.

A policy is fresh while the server keeps confirming it (each long-poll answer, 200 or
304). Once the server has not been reached for the org's `sync.grace_hours`, the org's
`sync.after_grace` decides: "open" keeps serving under the last good policy (with a loud
warning), "closed" makes `closed_reason()` say why, and the policy gate refuses requests
with that sentence until a fresh policy arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sidecar.central import policy_doc
from sidecar.central.enrollment import Enrollment
from sidecar.central.signing import SignatureInvalid, verify_envelope
from sidecar.errors import ConfigError
from sidecar.paths import Paths, replace_file
from sidecar.policy.config import GOVERNANCE_SECTIONS
from sidecar.policy.model import Policy
from sidecar.sync.client import DeviceClient, SyncError, SyncRefused
from sidecar.sync.settings import SyncConfig

log = logging.getLogger(__name__)

POLICY_FILE = "policy.json"
PERSIST_CONFIRMED_EVERY = 600.0  # seconds: how often a 304's "still current" is written to disk
BACKOFF_START = 1.0


@dataclass(frozen=True)
class OrgSync:
    """The org's `sync` settings (policy_doc.SYNC_DEFAULTS when it sets none)."""

    grace_hours: float = 72.0
    after_grace: str = "open"
    lease_usd: float = 5.0
    lease_ttl_seconds: float = 3600.0

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> OrgSync:
        """The settings of an effective policy document (ConfigError when malformed)."""
        return cls(**policy_doc.sync_settings(doc.get("sync"), "central policy"))


@dataclass(frozen=True)
class CentralPolicy:
    """One verified policy from the org's server."""

    version: int
    issued_at: float
    document: dict[str, Any]  # payload["policy"]: the effective org document for this device
    envelope: dict[str, Any]  # the signed envelope as received (persisted, verified again at load)
    received_at: float
    sync: OrgSync = field(default_factory=OrgSync)


def verify(envelope: Any, enrollment: Enrollment, held: int, received_at: float) -> CentralPolicy:
    """The CentralPolicy in `envelope` after every check (SignatureInvalid or ConfigError)."""
    payload = verify_envelope(envelope, enrollment.public_key, enrollment.device_id, min_version=held)
    doc, issued = payload.get("policy"), payload.get("issued_at")
    if not isinstance(doc, dict) or isinstance(issued, bool) or not isinstance(issued, int | float):
        raise SignatureInvalid("the signed payload has no policy object or no issue time")
    Policy.from_document({k: doc[k] for k in GOVERNANCE_SECTIONS if k in doc}, f"central policy v{payload['version']}")
    return CentralPolicy(payload["version"], float(issued), doc, envelope, received_at, OrgSync.from_document(doc))


def policy_file(paths: Paths) -> Path:
    """Where the last good envelope is kept."""
    return paths.data_dir / POLICY_FILE


class PolicySync:
    """Keeps the org's newest verified policy in force (see the module docstring)."""

    def __init__(
        self,
        client: DeviceClient,
        enrollment: Enrollment,
        paths: Paths,
        cfg: SyncConfig,
        apply: Callable[[CentralPolicy], None],
        publish: Callable[[str, dict[str, Any]], None],
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.enrollment = enrollment
        self.file = policy_file(paths)
        self.cfg = cfg
        self.apply = apply
        self.publish = publish
        self.clock = clock
        self.jitter = jitter
        self.current: CentralPolicy | None = None
        self.confirmed_at: float | None = None  # the server last said the held policy is current
        self.last_sync: float | None = None  # the server last answered
        self.error: str | None = None  # why the newest policy was refused, or the server is not reached
        self.failures = 0
        self._persisted_confirmed = 0.0
        self._report: dict[str, Any] | None = None  # what the server has yet to hear
        self._stale = False

    # ------------------------------------------------------------------ start

    def load_last_good(self) -> CentralPolicy | None:
        """Verify and apply the persisted policy (at start, before serving); None when there
        is none or it is refused (the reason in `state()`)."""
        try:
            saved = json.loads(self.file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self._refused(None, f"the saved policy {self.file} cannot be read: {e}")
            return None
        try:
            if not isinstance(saved, dict):
                raise SignatureInvalid("not a saved policy")
            received = float(saved.get("received_at") or 0.0)
            cp = verify(saved.get("envelope"), self.enrollment, 0, received)
            self.apply(cp)
        except Exception as e:  # the sidecar starts under the local config rather than not at all
            if not isinstance(e, SignatureInvalid | ConfigError | TypeError | ValueError):
                log.exception("central policy: applying the saved one failed")
            self._refused(None, f"the saved policy {self.file} was refused: {_why(e)}")
            return None
        self.current = cp
        confirmed = saved.get("confirmed_at")
        self.confirmed_at = max(cp.issued_at, float(confirmed) if isinstance(confirmed, int | float) else 0.0)
        self._persisted_confirmed = self.confirmed_at
        self._report = {"policy_version": cp.version, "policy_error": None}
        log.info("central policy v%d (saved %s) is in force", cp.version, _when(cp.received_at))
        self._check_stale()
        return cp

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Forever: long-poll for a newer policy, verify, persist, apply, report."""
        while True:
            delay = await self.poll_once()
            self._check_stale()
            if self._report is not None:
                await self._send_report()
            if delay:
                await asyncio.sleep(delay)

    async def poll_once(self) -> float:
        """One long-poll and what follows; the seconds to wait before the next (0: at once)."""
        held = self.current.version if self.current else None
        try:
            envelope = await self.client.policy(held, self.cfg.poll_wait_seconds)
        except SyncError as e:
            return self._failed(e)
        now = self.clock()
        self.last_sync = now
        if envelope is None:
            self._confirmed(now)
            return 0.0
        try:
            cp = verify(envelope, self.enrollment, held or 0, now)
            if cp.version == held:
                self._confirmed(now)
                return 0.0
            self.apply(cp)
        except Exception as e:  # whatever fails, the running policy stays and the loop goes on
            if not isinstance(e, SignatureInvalid | ConfigError):
                log.exception("central policy: applying it failed")
            version = _version_of(envelope)  # None: not even a version can be read from it
            self._refused(version, _why(e) if version is not None else f"the server's policy answer was refused: {_why(e)}")
            self.failures += 1
            return self._backoff(None)
        self.current, self.error, self.failures = cp, None, 0
        self._confirmed(now, persist=False)
        try:
            await asyncio.to_thread(self._persist, cp)
        except OSError as e:  # in force all the same; only a restart without the server loses it
            log.warning("central policy v%d: cannot save it to %s: %s", cp.version, self.file, e)
        self._report = {"policy_version": cp.version, "policy_error": None}
        log.info("central policy v%d is in force", cp.version)
        self.publish("policy_applied", {"version": cp.version, "issued_at": cp.issued_at})
        return 0.0

    def _failed(self, e: SyncError) -> float:
        self.failures += 1
        self.error = e.message
        if isinstance(e, SyncRefused) and e.revoked:
            self.error = f"the server no longer accepts this device ({e.message}); enroll again"
        log.warning("central policy: %s (retrying)", self.error)
        return self._backoff(e.retry_after)

    def _backoff(self, retry_after: float | None) -> float:
        """Exponential from BACKOFF_START to cfg.retry_max_seconds, with jitter (50-100 %)."""
        ceiling = min(self.cfg.retry_max_seconds, BACKOFF_START * 2 ** min(self.failures - 1, 30))
        delay = ceiling * (0.5 + 0.5 * self.jitter())
        return float(max(delay, min(retry_after or 0.0, self.cfg.retry_max_seconds)))

    def _refused(self, version: int | None, reason: str) -> None:
        name = f"policy v{version}" if version is not None else "a policy"
        held = f"v{self.current.version}" if self.current else "the local config's policy"
        self.error = f"{name} was refused: {reason}" if version is not None else reason
        log.error("central %s; %s stays in force", self.error, held)
        self.publish("policy_refused", {"version": version, "reason": reason, "held": self.current.version if self.current else None})
        self._report = {"policy_version": self.current.version if self.current else None, "policy_error": self.error}

    def _confirmed(self, now: float, persist: bool = True) -> None:
        if self.current is None:
            return
        self.confirmed_at = now
        if self.error and self.failures:
            self.error = None
        self.failures = 0
        if persist and now - self._persisted_confirmed >= PERSIST_CONFIRMED_EVERY:
            try:
                self._persist(self.current)
            except OSError as e:
                log.warning("central policy: cannot save %s: %s", self.file, e)

    def _persist(self, cp: CentralPolicy) -> None:
        """Write the envelope atomically, mode 0600."""
        confirmed = self.confirmed_at or cp.received_at
        data = {"envelope": cp.envelope, "received_at": cp.received_at, "confirmed_at": confirmed}
        self.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        replace_file(self.file, json.dumps(data), durable=True)
        self._persisted_confirmed = confirmed

    async def _send_report(self) -> None:
        report = self._report
        if report is None:
            return
        try:
            await self.client.report(report)
        except SyncRefused as e:
            if e.status != 404:  # a server without the status endpoint: nothing to tell
                log.warning("central policy: the server refused the status report: %s", e.message)
        except SyncError:
            return  # unreachable: told on a later round
        if self._report is report:
            self._report = None

    # ------------------------------------------------------------------ freshness

    def age(self) -> float | None:
        """Seconds since the server last confirmed the held policy."""
        return None if self.confirmed_at is None else max(0.0, self.clock() - self.confirmed_at)

    def stale(self) -> bool:
        """Whether the held policy is older than the org's grace period."""
        age = self.age()
        return self.current is not None and age is not None and age > self.current.sync.grace_hours * 3600

    def closed_reason(self) -> str | None:
        """Why requests are refused (stale past grace, and the org says "closed"), else None."""
        cp = self.current
        if cp is None or cp.sync.after_grace != "closed" or not self.stale():
            return None
        why = f" ({self.error})" if self.error else ""
        return (
            f"cannot reach the org's central server at {self.enrollment.url} since {_when(self.confirmed_at)}{why}; "
            f"the org's policy requires a fresh policy (after {cp.sync.grace_hours:g} h), so requests are refused "
            "until it is reached again: reconnect (network, VPN) or ask your admin"
        )

    def _check_stale(self) -> None:
        stale = self.stale()
        if stale == self._stale or self.current is None:
            return
        self._stale = stale
        data = {"version": self.current.version, "age_s": self.age(), "after_grace": self.current.sync.after_grace}
        if stale and self.current.sync.after_grace == "open":
            log.warning(
                "central policy v%d is older than the org's grace period (%g h, server not reached since %s); "
                "still serving under it, as the org allows", self.current.version, self.current.sync.grace_hours,
                _when(self.confirmed_at),
            )  # fmt: skip
        elif stale:
            log.error("sidecar refuses requests: %s", self.closed_reason())
        else:
            log.info("central policy v%d is fresh again", self.current.version)
        self.publish("policy_stale" if stale else "policy_fresh", data)

    def state(self) -> dict[str, Any]:
        """version, issued_at, age_s, last_sync, error, stale, after_grace, closed."""
        cp = self.current
        age = self.age()
        return {
            "version": cp.version if cp else None,
            "issued_at": cp.issued_at if cp else None,
            "age_s": None if age is None else round(age, 1),
            "last_sync": self.last_sync,
            "error": self.error,
            "stale": self.stale(),
            "grace_hours": cp.sync.grace_hours if cp else None,
            "after_grace": cp.sync.after_grace if cp else None,
            "closed": self.closed_reason(),
        }


def _version_of(envelope: Any) -> int | None:
    """The version an envelope claims (unverified: for messages only)."""
    try:
        v = json.loads(envelope["payload"]).get("version")
        return v if isinstance(v, int) and not isinstance(v, bool) else None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _why(e: Exception) -> str:
    if isinstance(e, ConfigError):
        return e.message
    return str(e) if isinstance(e, SignatureInvalid) else f"it could not be applied ({type(e).__name__}: {e})"


def _when(t: float | None) -> str:
    if t is None:
        return "never"
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M %Z")
