"""Torture: a real daemon under mixed load (streaming and not, c=8), readers in another
process (`usage`, `audit verify`, the TUI's control-API reads) in a loop, and SIGKILL at
random points, several times. After every restart the ledger holds every request whose
answer the client received completely, with the tokens the client saw; a request cut by the
kill may be there or not; `audit verify` reports the crashes as unclean shutdowns, never as
tampering."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from click.testing import CliRunner

from sidecar import paths
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_behaviours import Text
from sidecar.testing.harness import ChildSidecar, anthropic_config, start_child

SEED = int(os.environ.get("TORTURE_SEED", "1913"))
KILLS = 3
CONCURRENCY = 8
ROOT = Path(__file__).resolve().parents[3]
TUI_READS = ("/status", "/usage?group_by=daily", "/usage?group_by=model", "/routes", "/cache", "/policy")


@dataclass
class Tally:
    """What the clients saw."""

    completed: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (input, output)
    cut: int = 0  # requests sent whose answer did not arrive completely
    recorded_cut: int = 0  # rows beyond the answered ones (cut requests recorded anyway)


def body(n: int, stream: bool) -> dict[str, Any]:
    """A request whose size (so its input-token count) varies with `n`."""
    words = " ".join(["word"] * (n % 37 + 1))
    return {"model": "claude-opus-4-8", "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": f"#{n} {words}"}]}


async def one(client: aiohttp.ClientSession, url: str, n: int, stream: bool, tally: Tally) -> None:
    """Send one request; note it as completed (with the usage the client saw) or cut."""
    rid = None
    try:
        async with client.post(url + "/v1/messages", json=body(n, stream)) as resp:
            rid = resp.headers.get("x-sidecar-request-id")
            if not stream:
                msg = json.loads(await resp.read())
                assert resp.status == 200, msg
                assert rid is not None
                tally.completed[rid] = (msg["usage"]["input_tokens"], msg["usage"]["output_tokens"])
                return
            assert resp.status == 200
            inp = out = 0
            event = ""
            async for line in resp.content:
                text = line.decode().rstrip("\r\n")
                if text.startswith("event: "):
                    event = text[7:]
                elif text.startswith("data: "):
                    data = json.loads(text[6:])
                    if event == "message_start":
                        inp = data["message"]["usage"]["input_tokens"]
                    elif event == "message_delta":
                        out = data["usage"]["output_tokens"]
                    elif event == "message_stop":
                        # The answer is complete for the client the moment message_stop arrives.
                        assert rid is not None
                        tally.completed[rid] = (inp, out)
    except aiohttp.ClientConnectorError:
        pass  # refused: the daemon is down, nothing was sent
    except (aiohttp.ClientError, ConnectionError, ValueError):
        if rid not in tally.completed:
            tally.cut += 1


async def load(url: str, stop: asyncio.Event, tally: Tally, rng: random.Random, counter: list[int]) -> None:
    """CONCURRENCY clients sending a mix of streaming and whole answers until `stop`."""
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def worker() -> None:
            while not stop.is_set():
                counter[0] += 1
                await one(client, url, counter[0], rng.random() < 0.6, tally)

        async with asyncio.TaskGroup() as tg:
            for _ in range(CONCURRENCY):
                tg.create_task(worker())


def ledger(db_file: Path) -> dict[str, tuple[int, int]]:
    conn = sqlite3.connect(str(db_file), timeout=10)
    try:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, input_tokens, output_tokens FROM usage")}
    finally:
        conn.close()


def audited(db_file: Path) -> set[str]:
    conn = sqlite3.connect(str(db_file), timeout=10)
    try:
        return {r[0] for r in conn.execute("SELECT request_id FROM audit WHERE kind = 'request'")}
    finally:
        conn.close()


def verify_json(home: Path) -> dict[str, Any]:
    from sidecar.cli import cli

    env = {"CLAUDE_SIDECAR_HOME": str(home), "CLAUDE_SIDECAR_CONFIG": str(home / "config.toml")}
    result = CliRunner().invoke(cli, ["audit", "verify", "--json"], env=env)
    out: dict[str, Any] = json.loads(result.output)
    return out


def check(home: Path, tally: Tally, kills: int) -> None:
    """Everything the clients received completely is in the ledger and the audit log."""
    db_file = home / "data" / "sidecar.db"
    rows = ledger(db_file)
    missing = [rid for rid in tally.completed if rid not in rows]
    assert not missing, f"{len(missing)} of {len(tally.completed)} answered requests are not in the ledger"
    wrong = {rid: (rows[rid], seen) for rid, seen in tally.completed.items() if rows[rid] != seen}
    assert not wrong, f"tokens differ from what the client saw: {list(wrong.items())[:5]}"
    extra = len(rows) - len(tally.completed)
    assert 0 <= extra <= tally.cut, f"{extra} rows beyond the {len(tally.completed)} answered ones, but only {tally.cut} were cut"
    tally.recorded_cut = extra
    assert sum(rows[r][0] for r in tally.completed) == sum(v[0] for v in tally.completed.values())
    assert sum(rows[r][1] for r in tally.completed) == sum(v[1] for v in tally.completed.values())
    not_audited = set(tally.completed) - audited(db_file)
    assert not not_audited, f"{len(not_audited)} answered requests are not in the audit log"
    report = verify_json(home)
    assert report["ok"], report
    assert report["unclean_shutdowns"] == kills, report


READER = r"""
import http.client, json, sys, time, urllib.request, urllib.error
from pathlib import Path
from click.testing import CliRunner
from sidecar.cli import cli

home, stop, out = Path(sys.argv[1]), Path(sys.argv[2]), open(sys.argv[3], "a")
reads, state_file, token_file = json.loads(sys.argv[4]), Path(sys.argv[5]), Path(sys.argv[6])
env = {"CLAUDE_SIDECAR_HOME": str(home), "CLAUDE_SIDECAR_CONFIG": str(home / "config.toml")}
runner = CliRunner()
counts = {"usage": 0, "verify": 0, "api": 0}
def note(kind, **info):
    out.write(json.dumps({"kind": kind, **info}) + "\n"); out.flush()
while not stop.exists():
    r = runner.invoke(cli, ["usage", "--json"], env=env)
    if r.exit_code != 0: note("usage", output=r.output, exc=repr(r.exception))
    else: counts["usage"] += 1
    r = runner.invoke(cli, ["audit", "verify", "--json"], env=env)
    if r.exit_code != 0 and "no audit log yet" not in r.output: note("verify", output=r.output, exc=repr(r.exception))
    else: counts["verify"] += 1
    try:
        state = json.loads(state_file.read_text())
        token = token_file.read_text().strip()
    except (OSError, ValueError):
        continue
    for path in reads:
        req = urllib.request.Request(state["url"] + "/sidecar/v1" + path, headers={"Authorization": "Bearer " + token})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                json.loads(resp.read()); counts["api"] += 1
        except urllib.error.HTTPError as e:
            note("api", path=path, status=e.code, body=e.read().decode(errors="replace")[:300])
        except (OSError, ValueError, http.client.HTTPException):
            pass  # the daemon is down (killed mid-answer) or restarting
note("done", **counts)
"""


async def test_sigkill_under_load_loses_no_answered_request(hermetic_env: Path, tmp_path: Path) -> None:
    home = hermetic_env
    rng = random.Random(SEED)
    tally = Tally()
    counter = [0]
    stop_file, report_file = tmp_path / "stop-readers", tmp_path / "readers.jsonl"
    async with FakeAnthropic(default=Text("one two three four five six seven eight", delay_between_events=0.002)) as fake:
        config = anthropic_config(fake.url)
        child: ChildSidecar = await asyncio.to_thread(start_child, home, config)
        p = paths.resolve({"CLAUDE_SIDECAR_HOME": str(home), "CLAUDE_SIDECAR_CONFIG": str(home / "config.toml")})
        reader = await asyncio.create_subprocess_exec(
            sys.executable, "-c", READER, str(home), str(stop_file), str(report_file), json.dumps(TUI_READS), str(p.state_file), str(p.token_file),
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            for kill in range(1, KILLS + 1):
                stop = asyncio.Event()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(load(child.url, stop, tally, rng, counter))
                    await asyncio.sleep(rng.uniform(1.0, 3.0))
                    child.proc.kill()
                    await asyncio.to_thread(child.proc.wait)
                    stop.set()
                child = await asyncio.to_thread(start_child, home, config)
                await asyncio.to_thread(check, home, tally, kill)
            # A clean stop after the crashes: still intact, still KILLS unclean shutdowns.
            assert await asyncio.to_thread(child.stop) == 0
            await asyncio.to_thread(check, home, tally, KILLS)
            assert await asyncio.to_thread(lambda: list((home / "data" / "journal").iterdir())) == []  # all committed
        finally:
            child.proc.kill()
            stop_file.touch()
            try:
                async with asyncio.timeout(60):
                    await reader.wait()
            finally:
                if reader.returncode is None:
                    reader.kill()
                    await reader.wait()
    problems = [json.loads(line) for line in report_file.read_text().splitlines()]
    done = [x for x in problems if x["kind"] == "done"]
    assert [x for x in problems if x["kind"] != "done"] == []
    assert done and done[0]["usage"] > 0 and done[0]["verify"] > 0 and done[0]["api"] > 0, done
    assert len(tally.completed) > 100 and tally.cut > 0, (len(tally.completed), tally.cut)
    print(f"torture: {len(tally.completed)} answered (all in the ledger and the audit log), {tally.cut} cut by a kill "
          f"({tally.recorded_cut} of them recorded), {KILLS} kills, reader loops {done[0]}")
