"""The Code Mode sandbox, parent side: one worker process per script, under four limits.

The worker (sidecar.mcp.worker) interprets Starlark, which has no file, network, clock or
import access. Around it:
- wall clock: the worker checks its own deadline while it interprets, and the parent kills
  it one second after the deadline whatever it is doing (a tool call's time counts too);
- steps: the interpreter's cancellation hook runs on every loop iteration and call, and the
  worker stops the script past `steps` of them;
- memory: the worker caps its own address space (RLIMIT_AS) before the script starts, so a
  blow-up ends that process, never the sidecar;
- output: printed text and the result are capped in the worker, and the parent reads
  lines of bounded length.
Each tool call the script makes comes to the parent as a message; `call` (the gateway's
call-time policy check, then the upstream call) answers it. Nothing about the script is
decided by reading its text.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")
GRACE = 1.0  # seconds past the deadline before the parent kills the worker
MAX_LINE = 8 * 1024 * 1024  # one message from the worker (a tool call's arguments, the outcome)

ToolCaller = Callable[[str, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Limits:
    """What one script may use."""

    seconds: float = 10.0
    steps: int = 2_000_000
    memory_mb: int = 256
    output_bytes: int = 65536
    stack: int = 200  # Starlark call depth (recursion)


@dataclass
class ScriptResult:
    """What a script printed and returned, or why it was stopped."""

    ok: bool
    output: str
    result: Any = None
    error: str | None = None
    calls: int = 0
    steps: int = 0
    seconds: float = 0.0

    def text(self) -> str:
        """The answer the model reads."""
        parts = [self.output.rstrip("\n")] if self.output.strip() else []
        if self.ok:
            parts.append("result: " + json.dumps(self.result, default=str))
        else:
            parts.append(f"error: {self.error}")
        return "\n".join(parts)


async def run_script(code: str, servers: dict[str, dict[str, str]], call: ToolCaller, limits: Limits) -> ScriptResult:
    """Run `code` in a fresh worker. `servers` maps a script variable to {attribute: tool
    name}; every tool call is answered by `call(name, args)` (which raises to refuse)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        str(WORKER),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_worker_env(),
        cwd=tempfile.gettempdir(),
        limit=MAX_LINE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    job = {
        "code": code,
        "servers": servers,
        "limits": {
            "seconds": limits.seconds,
            "steps": limits.steps,
            "memory_mb": limits.memory_mb,
            "output_bytes": limits.output_bytes,
            "stack": limits.stack,
        },
    }
    deadline = started + limits.seconds + GRACE
    calls = 0
    try:
        proc.stdin.write(json.dumps(job).encode() + b"\n")
        await proc.stdin.drain()
        while True:
            left = deadline - time.monotonic()
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), max(left, 0.001))
            except TimeoutError:
                return await _timed_out(proc, limits, calls, started)
            except ValueError:  # a line past MAX_LINE
                return _stopped("the script sent a message larger than the sandbox accepts", calls, started)
            if not line:
                return await _died(proc, limits, calls, started)
            msg = json.loads(line)
            if "end" in msg:
                end = msg["end"]
                return ScriptResult(
                    ok=bool(end.get("done")),
                    output=str(end.get("output", "")),
                    result=end.get("result"),
                    error=end.get("error"),
                    calls=int(end.get("calls", calls)),
                    steps=int(end.get("steps", 0)),
                    seconds=time.monotonic() - started,
                )
            calls += 1
            try:
                value = await asyncio.wait_for(call(str(msg["call"]), dict(msg.get("args") or {})), max(deadline - time.monotonic(), 0.001))
                reply: dict[str, Any] = {"ok": value}
            except TimeoutError:
                return _stopped(f"the script exceeded its time limit ({limits.seconds:g} s) in a tool call", calls, started)
            except Exception as e:
                reply = {"error": str(e) or type(e).__name__}
            proc.stdin.write(json.dumps(reply, default=str).encode() + b"\n")
            await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        return await _died(proc, limits, calls, started)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def _stopped(reason: str, calls: int, started: float) -> ScriptResult:
    return ScriptResult(ok=False, output="", error=reason, calls=calls, seconds=time.monotonic() - started)


async def _timed_out(proc: asyncio.subprocess.Process, limits: Limits, calls: int, started: float) -> ScriptResult:
    """Past the deadline: kill the worker; a worker stuck failing an allocation reports memory."""
    proc.kill()
    result = await _died(proc, limits, calls, started)
    if "memory limit" in (result.error or ""):
        return result
    return _stopped(f"the script exceeded its time limit ({limits.seconds:g} s)", calls, started)


async def _died(proc: asyncio.subprocess.Process, limits: Limits, calls: int, started: float) -> ScriptResult:
    """The worker ended without an outcome: say why as well as its exit shows."""
    assert proc.stderr is not None
    try:
        err = (await asyncio.wait_for(proc.stderr.read(65536), 2.0)).decode("utf-8", "replace")
    except TimeoutError:
        err = ""
    code = await proc.wait()
    if "memory allocation" in err or "out of memory" in err or "MemoryError" in err or code == -getattr(signal, "SIGABRT", 6):
        reason = f"the script exceeded its memory limit ({limits.memory_mb} MB)"
    else:
        last = err.strip().splitlines()[-1:] or [f"exit code {code}"]
        reason = f"the sandbox worker failed: {last[0][:300]}"
    return _stopped(reason, calls, started)


def _worker_env() -> dict[str, str]:
    """A bare environment: no secrets of the sidecar reach the worker."""
    env = {"RUST_BACKTRACE": "0", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    for name in ("SYSTEMROOT", "PATH"):  # Windows needs SYSTEMROOT to start Python
        if name in os.environ:
            env[name] = os.environ[name]
    return env
