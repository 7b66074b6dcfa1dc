"""PolicySync against a real central server (a child process on SQLite): a push is applied,
every tampered envelope is refused with the previous policy kept and the reason reported,
the last good policy survives a restart (and a file edited on disk does not), and a stale
policy past the org's grace period fails open or closed as the org says."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar import paths as paths_mod
from sidecar.central.enrollment import Enrollment
from sidecar.central.signing import SigningKey
from sidecar.errors import ConfigError
from sidecar.paths import Paths
from sidecar.policy.control import POLICY
from sidecar.sync.client import DeviceClient
from sidecar.sync.merge import overlay
from sidecar.sync.policy import CentralPolicy, PolicySync, policy_file
from sidecar.sync.settings import SyncConfig
from sidecar.testing.central import CentralProcess
from sidecar.testing.governed import HeldUpstream, body, governed, post

CFG = SyncConfig(poll_wait_seconds=1, retry_max_seconds=1)


@dataclass
class Server:
    """The central server and an admin session on it."""

    proc: CentralProcess
    http: aiohttp.ClientSession
    token: str

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        headers = {"authorization": f"Bearer {token or self.token}"}
        async with self.http.request(method, self.proc.url + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def push(self, doc: dict[str, Any], scope: str = "org") -> int:
        status, answer = await self.call("POST", "/v1/admin/policy", {"scope": scope, "document": doc})
        assert status == 201, answer
        return int(answer["version"])

    async def enroll(self, email: str) -> tuple[Enrollment, str]:
        await self.call("POST", "/v1/admin/developers", {"email": email})
        status, enr = await self.call("POST", "/v1/admin/enrollment-tokens", {"developer": email})
        assert status < 300, enr
        status, got = await self.call("POST", "/v1/enroll", {"token": enr["token"], "name": "laptop"})
        assert status == 201, got
        record = Enrollment(self.proc.url, got["device_id"], got["developer_id"], got["public_key"], got["key_id"], time.time())
        return record, got["credential"]

    async def device(self, device_id: str) -> dict[str, Any]:
        _, answer = await self.call("GET", "/v1/admin/devices")
        [row] = [d for d in answer["devices"] if d["id"] == device_id]
        return dict(row)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with CentralProcess(f"sqlite:///{tmp_path / 'central.db'}", "--max-wait", "5") as proc, aiohttp.ClientSession() as http:
        assert proc.bootstrap_token
        yield Server(proc, http, proc.bootstrap_token)


class Tampering(DeviceClient):
    """A device client whose policy answers pass through `tamper` first (a man in the middle)."""

    tamper: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    async def policy(self, after: int | None, wait: float) -> dict[str, Any] | None:
        envelope = await super().policy(after, wait)
        return self.tamper(envelope) if envelope is not None and self.tamper is not None else envelope


@dataclass
class Device:
    sync: PolicySync
    client: Tampering
    enrollment: Enrollment
    credential: str
    paths: Paths
    applied: list[CentralPolicy] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def make_device(
    enrollment: Enrollment, credential: str, home: Path, clock: Callable[[], float] = time.time, cfg: SyncConfig = CFG
) -> Device:
    paths = paths_mod.resolve({"CLAUDE_SIDECAR_HOME": str(home)})
    paths.ensure()
    client = Tampering(enrollment.url, credential)
    d = Device(None, client, enrollment, credential, paths)  # type: ignore[arg-type]
    d.sync = PolicySync(client, enrollment, paths, cfg, d.applied.append, lambda t, e: d.events.append((t, e)), clock=clock, jitter=lambda: 0.0)
    return d


@pytest.fixture
async def device(server: Server, tmp_path: Path) -> AsyncIterator[Device]:
    enrollment, credential = await server.enroll("ada@example.com")
    d = make_device(enrollment, credential, tmp_path / "home")
    yield d
    await d.client.close()


def flip(envelope: dict[str, Any]) -> dict[str, Any]:
    """One changed byte in the payload: a budget of 5 becomes 9."""
    assert '"daily_usd":5' in envelope["payload"]
    return {**envelope, "payload": envelope["payload"].replace('"daily_usd":5', '"daily_usd":9')}


def other_key(envelope: dict[str, Any]) -> dict[str, Any]:
    """The same payload, newer, validly signed by a key the device did not pin."""
    payload = json.loads(envelope["payload"])
    return SigningKey.generate().sign({**payload, "version": payload["version"] + 5})


async def test_a_push_is_applied_persisted_and_reported(server: Server, device: Device) -> None:
    assert await device.sync.poll_once() == 0  # the current (empty) policy
    first = device.sync.current
    version = await server.push({"budget": {"daily_usd": 5}, "tools": {"deny": ["WebFetch"]}})
    assert first is not None and first.version < version
    task = asyncio.ensure_future(device.sync.run())
    try:
        for _ in range(400):  # up to 20 s
            if (await server.device(device.enrollment.device_id))["policy_version"] == version:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert (await server.device(device.enrollment.device_id))["policy_error"] is None
    applied = device.applied[-1]
    assert applied.version == version and (await server.device(device.enrollment.device_id))["policy_version"] == version and applied.document["budget"] == {"daily_usd": 5}
    state = device.sync.state()
    assert (state["version"], state["error"], state["stale"], state["closed"]) == (version, None, False, None)
    saved = policy_file(device.paths)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["envelope"] == applied.envelope
    assert ("policy_applied", {"version": version, "issued_at": applied.issued_at}) in device.events


@pytest.mark.parametrize("attack", ["flipped byte", "another key", "another device", "older version"])
async def test_a_tampered_policy_is_refused_the_previous_kept_and_the_reason_reported(
    attack: str, server: Server, device: Device, tmp_path: Path
) -> None:
    v1 = await server.push({"budget": {"daily_usd": 5}})
    await device.sync.poll_once()
    old_envelope = device.sync.current.envelope if device.sync.current else {}
    v2 = await server.push({"budget": {"daily_usd": 5}, "limits": {"max_concurrent": 3}})
    if attack == "older version":
        await device.sync.poll_once()  # hold v2; the attacker replays v1
        held = v2
        device.client.tamper = lambda _: old_envelope
        await server.push({"budget": {"daily_usd": 5}, "limits": {"max_concurrent": 4}})  # so the poll returns
        reason = f"older than the held version {v2}"
    else:
        held = v1
        other = None
        if attack == "another device":
            enrollment, credential = await server.enroll("bob@example.com")
            other = DeviceClient(enrollment.url, credential)
        stolen = await other.policy(None, 0) if other else None
        if other:
            await other.close()
        device.client.tamper = {
            "flipped byte": flip, "another key": other_key, "another device": lambda _: stolen or {},
        }[attack]  # fmt: skip
        reason = {"flipped byte": "does not verify with the pinned key", "another key": "does not verify with the pinned key",
                  "another device": "was issued to device"}[attack]  # fmt: skip
    applied_before = len(device.applied)
    delay = await device.sync.poll_once()
    await device.sync._send_report()
    state = device.sync.state()
    assert delay > 0  # backs off instead of polling the bad answer again at once
    assert len(device.applied) == applied_before and state["version"] == held
    assert json.loads(policy_file(device.paths).read_text())["envelope"] == device.sync.current.envelope  # type: ignore[union-attr]
    assert reason in state["error"] and "was refused" in state["error"]
    row = await server.device(device.enrollment.device_id)
    assert row["policy_version"] == held and reason in row["policy_error"]
    assert any(t == "policy_refused" and e["held"] == held for t, e in device.events)
    # the genuine server answer is taken once the man in the middle is gone
    device.client.tamper = None
    await device.sync.poll_once()
    await device.sync._send_report()
    assert device.sync.state()["error"] is None and device.sync.current.version > held  # type: ignore[union-attr]
    assert (await server.device(device.enrollment.device_id))["policy_error"] is None


async def test_the_last_good_policy_survives_a_restart_and_an_edited_file_is_refused(
    server: Server, device: Device, tmp_path: Path
) -> None:
    version = await server.push({"budget": {"daily_usd": 5}})
    await device.sync.poll_once()
    saved = policy_file(device.paths)
    original = json.loads(saved.read_text())["envelope"]
    again = make_device(device.enrollment, "unused", tmp_path / "home")
    loaded = again.sync.load_last_good()  # no server call: works offline
    assert loaded is not None and loaded.version == version and again.applied == [loaded]
    assert again.sync.state()["version"] == version
    # an edit on disk (a looser budget) breaks the signature: refused, nothing applied
    data = json.loads(saved.read_text())
    data["envelope"] = flip(data["envelope"])
    saved.write_text(json.dumps(data))
    edited = make_device(device.enrollment, "unused", tmp_path / "home")
    assert edited.sync.load_last_good() is None and edited.applied == []
    assert "was refused" in edited.sync.state()["error"] and edited.sync.state()["version"] is None
    # a key swapped on disk for another of the attacker's is refused too
    data["envelope"] = other_key(original)
    saved.write_text(json.dumps(data))
    swapped = make_device(device.enrollment, "unused", tmp_path / "home")
    assert swapped.sync.load_last_good() is None
    for d in (again, edited, swapped):
        await d.client.close()


@pytest.mark.parametrize("after_grace", ["closed", "open"])
async def test_stale_past_grace_fails_as_the_org_says(
    after_grace: str, server: Server, device: Device, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    now = [time.time()]
    stale_device = make_device(device.enrollment, device.credential, hermetic_env.parent / "stale-home", clock=lambda: now[0])
    await server.push({"sync": {"grace_hours": 1, "after_grace": after_grace}})
    await stale_device.sync.poll_once()
    assert stale_device.sync.closed_reason() is None
    now[0] += 2 * 3600  # two hours without reaching the server
    stale_device.sync._check_stale()  # what the loop does after each (failed) poll
    async with HeldUpstream({"input_tokens": 10, "output_tokens": 5}) as up, governed(up.url, hermetic_env, "") as sc:
        up.released.set()
        sc.app[POLICY].closed = stale_device.sync.closed_reason
        status, headers, raw = await post(client, sc, body("hi"))
        state = stale_device.sync.state()
        await stale_device.sync.poll_once()  # the server is reached again: fresh
        stale_device.sync._check_stale()
        status_after, _, _ = await post(client, sc, body("hi"))
    assert state["stale"] and state["after_grace"] == after_grace
    if after_grace == "closed":
        message = json.loads(raw)["error"]["message"]
        assert status == 503 and headers["x-should-retry"] == "false"
        assert server.proc.url in message and "after 1 h" in message and "reconnect" in message
        assert state["closed"] == message.removeprefix("claude-sidecar: ")
    else:
        assert status == 200 and state["closed"] is None
    await stale_device.client.close()
    assert status_after == 200 and stale_device.sync.state()["stale"] is False
    kinds = [t for t, _ in stale_device.events]
    assert kinds[-2:] == ["policy_stale", "policy_fresh"]


async def test_an_unreachable_server_backs_off_with_the_reason_in_state(tmp_path: Path) -> None:
    record = Enrollment("http://127.0.0.1:9", "dev_x", "d", base64.b64encode(b"k" * 32).decode(), "k", 0.0)
    d = make_device(record, "cred", tmp_path / "home", cfg=SyncConfig(retry_max_seconds=3))
    try:
        delays = [await d.sync.poll_once() for _ in range(4)]
    finally:
        await d.client.close()
    assert delays == [0.5, 1.0, 1.5, 1.5]  # doubling from 1 s up to retry_max, jitter at its lowest (50 %)
    assert "cannot reach the central server" in (d.sync.state()["error"] or "")


def test_overlay_of_a_central_policy_keeps_local_keys(tmp_path: Path) -> None:
    from sidecar.config import Config
    from sidecar.policy.config import read_governance

    local = Config(governance=read_governance({"limits": {"requests_per_minute": 10}}))
    cp = CentralPolicy(4, 1.0, {"budget": {"daily_usd": 5}}, {}, 1.0)
    eff, policy = overlay(local, cp)
    assert (eff.governance.budget.daily_usd, eff.governance.limits.requests_per_minute, policy.version) == (5, 10, 4)


async def test_a_policy_that_cannot_be_applied_is_refused_and_reported(server: Server, device: Device) -> None:
    v1 = await server.push({"budget": {"daily_usd": 5}})
    await device.sync.poll_once()

    def apply(cp: CentralPolicy) -> None:
        raise ConfigError(f"central v{cp.version}: its routes/providers do not make a valid config")

    device.sync.apply = apply
    v2 = await server.push({"budget": {"daily_usd": 4}})
    assert await device.sync.poll_once() > 0
    await device.sync._send_report()
    row = await server.device(device.enrollment.device_id)
    assert device.sync.current is not None and device.sync.current.version == v1
    assert row["policy_version"] == v1 and f"policy v{v2} was refused" in row["policy_error"]


async def test_a_policy_that_cannot_be_saved_is_in_force_all_the_same(server: Server, device: Device) -> None:
    policy_file(device.paths).mkdir(parents=True)  # the saved file cannot take the place of a directory
    version = await server.push({"budget": {"daily_usd": 5}})
    assert await device.sync.poll_once() == 0
    assert device.applied[-1].version == version and device.sync.state()["version"] == version
    assert policy_file(device.paths).is_dir()  # nothing saved ...
    assert [p.name for p in policy_file(device.paths).parent.glob("*.tmp")] == []  # ... and nothing left half-way
