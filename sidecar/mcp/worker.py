"""The Code Mode worker: runs one Starlark script in a process of its own.

Started by sidecar.mcp.sandbox as `python -m sidecar.mcp.worker`. It reads one JSON line
(the script, the tool bindings, the limits), caps its own address space (RLIMIT_AS), and
runs the script in starlark-pyo3, which has no file, network, clock or import access.
Tool calls leave the worker as JSON lines on stdout and wait for the answer on stdin: the
parent checks the policy and makes the call. The last line is the outcome. Imports only
the standard library and starlark, so it starts fast and sees nothing of the sidecar.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

OUT = sys.stdout


class Stop(Exception):
    """A limit was reached; the message says which."""


def _send(obj: dict[str, Any]) -> None:
    OUT.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
    OUT.flush()


def _set_memory_limit(mb: int) -> None:
    try:
        import resource
    except ImportError:  # Windows: the parent's wall clock and output caps still hold
        return
    limit = mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _prelude(servers: dict[str, dict[str, str]]) -> str:
    """Starlark that binds each server as a struct whose fields call its tools by name."""
    lines = []
    for var, tools in servers.items():
        fields = ", ".join(f'{attr} = lambda **kw: call_tool("{full}", kw)' for attr, full in tools.items())
        lines.append(f"{var} = struct({fields})")
    return "\n".join(lines) + "\n"


def run(job: dict[str, Any], sl: Any) -> dict[str, Any]:
    """Run the script of `job` with the starlark module `sl`; the outcome as a JSON-able dict."""
    limits = job["limits"]
    out: list[str] = []
    size = [0]
    steps = [0]
    deadline = time.monotonic() + float(limits["seconds"])
    calls = [0]

    def check_cancelled() -> bool:
        # starlark-pyo3 calls this on every loop iteration and function call: a step count.
        steps[0] += 1
        if steps[0] > limits["steps"]:
            raise Stop(f"the script exceeded its step limit ({limits['steps']} steps)")
        if steps[0] % 1024 == 0 and time.monotonic() > deadline:
            raise Stop(f"the script exceeded its time limit ({limits['seconds']:g} s)")
        return False

    def emit(text: str, keep: bool = True) -> None:
        size[0] += len(text.encode("utf-8", "replace"))
        if size[0] > limits["output_bytes"]:
            raise Stop(f"the script's output exceeded its limit ({limits['output_bytes']} bytes)")
        if keep:
            out.append(text)

    def print_(*args: Any, sep: str = " ") -> None:
        emit(sep.join(a if isinstance(a, str) else json.dumps(a, default=str) for a in args) + "\n")

    def call_tool(name: Any, args: Any = None) -> Any:
        if not isinstance(name, str):
            raise ValueError("call_tool(name, args): name must be a string like 'server__tool'")
        if args is not None and not isinstance(args, dict):
            raise ValueError("call_tool(name, args): args must be a dict")
        calls[0] += 1
        _send({"call": name, "args": args or {}})
        line = sys.stdin.readline()
        if not line:
            raise Stop("the sidecar closed the worker's channel")
        reply = json.loads(line)
        if "error" in reply:
            raise ValueError(reply["error"])
        return reply["ok"]

    globals_ = sl.Globals.extended_by(
        [sl.LibraryExtension.StructType, sl.LibraryExtension.Map, sl.LibraryExtension.Filter, sl.LibraryExtension.Json]
    )
    module = sl.Module()
    module.add_callable("call_tool", call_tool)
    module.add_callable("print", print_)
    options = sl.EvalOptions(check_cancelled=check_cancelled, max_callstack_size=int(limits["stack"]))
    try:
        sl.eval_with(options, module, sl.parse("prelude.star", _prelude(job["servers"]), sl.Dialect.extended()), globals_)
        ast = sl.parse("script.star", job["code"], sl.Dialect.extended())
        value = sl.eval_with(options, module, ast, globals_).value
        try:
            result = module["result"]
        except Exception:
            result = value
        text = json.dumps(result, default=str)
        emit(text, keep=False)  # the result counts against the output limit too
        return {"done": True, "output": "".join(out), "result": result, "calls": calls[0], "steps": steps[0]}
    except Stop as e:
        return {"done": False, "error": str(e), "output": "".join(out), "calls": calls[0], "steps": steps[0]}
    except sl.StarlarkError as e:
        return {"done": False, "error": _starlark_error(str(e)), "output": "".join(out), "calls": calls[0], "steps": steps[0]}


def _starlark_error(text: str) -> str:
    """Starlark's error, without the traceback's repeated frames; a limit hit inside a
    callback comes back wrapped in the interpreter's error, so it is unwrapped."""
    for line in text.splitlines():
        if line.startswith("error: "):
            msg = line[len("error: ") :]
            if msg.startswith("Stop: "):
                return msg[len("Stop: ") :]
            if msg.startswith("ValueError: "):
                msg = msg[len("ValueError: ") :]
            if "call stack overflow" in msg:
                return "the script exceeded its recursion limit (Starlark call stack overflow)"
            return msg + _where(text)
    return text.strip()[-2000:]


def _where(text: str) -> str:
    for line in text.splitlines():
        if line.startswith(" --> "):
            return f" (at {line[5:].strip()})"
    return ""


def memory_error(mb: int) -> str:
    """What a script that ran out of memory is told."""
    return f"the script exceeded its memory limit ({mb} MB)"


def main() -> None:
    """Read the job, limit memory, run, write the outcome."""
    import starlark  # before the memory cap: loading the library maps its pages

    job = json.loads(sys.stdin.readline())
    _set_memory_limit(int(job["limits"]["memory_mb"]))
    try:
        outcome = run(job, starlark)
    except BaseException as e:  # MemoryError, or pyo3's PanicException("out of memory")
        if not isinstance(e, MemoryError) and "out of memory" not in str(e):
            raise
        outcome = {"done": False, "error": memory_error(int(job["limits"]["memory_mb"])), "output": ""}
    _send({"end": outcome})


if __name__ == "__main__":
    main()
