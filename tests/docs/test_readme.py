"""The README tells the truth: every command group and config section is documented, and the
commands of its walk-throughs run, in a reader's order, against a real daemon and fake upstreams.

A fenced block opened with ```` ```sh tested ```` is run by `test_the_readme_walkthroughs_run`
(with CLAUDE_SIDECAR_HOME in a temp dir, each provider's `base_url` pointed at a fake); plain
```` ```sh ```` blocks are examples only.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import click
import pytest

from sidecar import config, paths
from sidecar.cli import cli
from sidecar.cli.common import pid_alive
from sidecar.daemon_state import read_state
from sidecar.errors import ConfigError
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_openai import FakeOpenAI
from sidecar.testing.harness import anthropic_config
from sidecar.testing.requirements import require_files, require_tool

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"^(?P<indent> *)```sh tested\n(?P<body>.*?)^(?P=indent)```$", re.M | re.S)
# The order a new user goes through them; each section's blocks run in README order.
FLOW = [
    "Route some traffic to OpenAI", "Point Claude Code at it", "Budgets and limits",
    "Guardrails and tool rules", "Audit log", "Logs", "Uninstall",
]  # fmt: skip
# What each section's output must show (beyond every command exiting 0).
EXPECT = {
    "Route some traffic to OpenAI": ["stored the key for openai", "credentials: keyring:openai", "x-sidecar-token: ",
                                     "x-sidecar-upstream: openai/gpt-5-mini", "background-to-openai"],
    "Point Claude Code at it": ["running at http://127.0.0.1:", "Usage per day"],
    "Budgets and limits": ["ok: ", "anthropic-ratelimit-unified-overage-utilization: "],
    "Guardrails and tool rules": ['"type": "policy_blocked"', "AWS access key id"],
    "Audit log": ["audit entries verified", '"kind":'],
    "Logs": ["sidecar.log", "listening on http://127.0.0.1:"],
    "Uninstall": ["stopped (pid", "openai", "logs "],
}  # fmt: skip
FAKE_SYSTEMCTL = '#!/bin/sh\necho "$*" >> "$(dirname "$0")/systemctl.log"\nexit 0\n'


def readme() -> str:
    return README.read_text()


def runnable_blocks(text: str) -> list[tuple[str, str]]:
    """(section heading, dedented script) for each ```sh tested block, in README order."""
    out = []
    for m in BLOCK.finditer(text):
        headings = re.findall(r"^## (.+)$", text[: m.start()], re.M)
        out.append((headings[-1] if headings else "", textwrap.dedent(m.group("body"))))
    return out


def command_table(text: str) -> set[str]:
    """The commands named in the first cell of each row of the README's "## Commands" table."""
    section = text[text.index("## Commands") :]
    rows = [ln for ln in section.split("\n\n", 2)[1].splitlines() if ln.startswith("| `")]
    names = set()
    for row in rows:
        first = re.split(r"(?<!\\)\|", row)[1]
        names |= {span.split()[0] for span in re.findall(r"`([^`]+)`", first)}
    return names


def cli_commands() -> set[str]:
    """Every command group and command of `claude-sidecar --help`."""
    return {name for name, cmd in cli.commands.items() if not cmd.hidden}


def accepted_sections() -> set[str]:
    """The top-level config sections the reader accepts, as its own error message lists them."""
    with pytest.raises(ConfigError) as refused:
        config.parse("[zz_not_a_section]\n", None, {})
    listed = re.search(r"expected one of: ([^)]*)\)", refused.value.message)
    assert listed, refused.value.message
    return {s.strip() for s in listed.group(1).split(",")}


def documentation(text: str) -> str:
    """The README and the docs it links to."""
    linked = sorted(set(re.findall(r"\]\((docs/[^)#\s]+\.md)", text)))
    return "\n".join([text, *((ROOT / doc).read_text() for doc in linked if (ROOT / doc).exists())])


def undocumented_sections(docs: str, sections: set[str]) -> set[str]:
    return {s for s in sections if not re.search(rf"\[\[?{re.escape(s)}[\].]", docs)}


# ------------------------------------------------------------------ coverage


def test_every_command_is_in_the_readme_command_table() -> None:
    assert cli_commands() - command_table(readme()) == set()


def test_a_command_added_without_docs_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.commands, "frobnicate", click.Command("frobnicate", help="New."))
    assert cli_commands() - command_table(readme()) == {"frobnicate"}


def test_every_config_section_is_documented() -> None:
    sections = accepted_sections()
    assert {"server", "providers", "budget", "guardrails"} <= sections  # the probe reads the real list
    assert undocumented_sections(documentation(readme()), sections) == set()


def test_a_config_section_added_without_docs_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "GOVERNANCE_SECTIONS", (*config.GOVERNANCE_SECTIONS, "frobnicate"))
    assert undocumented_sections(documentation(readme()), accepted_sections()) == {"frobnicate"}


def test_the_walkthrough_sections_exist_and_are_tested() -> None:
    sections = [s for s, _ in runnable_blocks(readme())]
    assert set(sections) <= set(FLOW), "a tested block outside the flow: add its section to FLOW and EXPECT"
    assert set(FLOW) <= set(sections), "a walk-through lost its tested commands"


# ------------------------------------------------------------------ the walk-throughs, run


def _stop_daemon() -> None:
    state = read_state(paths.resolve())
    pid = int(state["pid"]) if state else 0
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)


@pytest.fixture
def shell_env(hermetic_env: Path, tmp_path: Path) -> dict[str, str]:
    """The environment a reader's shell has: the installed `claude-sidecar` first on PATH, a
    HOME of its own (a `systemctl` that only records, for `service uninstall`)."""
    exe = Path(sys.executable).parent / "claude-sidecar"
    require_files(exe.exists(), f"{exe} (./scripts/test installs the project into .venv)")
    require_tool("curl", "./scripts/test installs curl from the distribution")
    home = tmp_path / "home"
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir(parents=True)
    (fakebin / "systemctl").write_text(FAKE_SYSTEMCTL)
    (fakebin / "systemctl").chmod(0o755)
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    return env | {
        "PATH": os.pathsep.join([str(exe.parent), str(fakebin), os.environ.get("PATH", "")]),
        "HOME": str(home),
        "CLAUDE_SIDECAR_PORT": "0",  # README says 8787; tests take any free port
        "OPENAI_API_KEY": "sk-proj-readme-test-key",
    }


async def _sh(script: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "sh", "-e", "-c", script, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(90):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_the_readme_walkthroughs_run(shell_env: dict[str, str], tmp_path: Path) -> None:
    blocks = runnable_blocks(readme())
    cfg = paths.resolve().config_file
    cfg.parent.mkdir(parents=True, exist_ok=True)
    async with FakeAnthropic() as anthropic, FakeOpenAI() as openai:
        cfg.write_text(anthropic_config(anthropic.url))  # the reader's config: Anthropic, forwarding their login
        outputs: dict[str, str] = {}
        try:
            for section in FLOW:
                for _, script in (b for b in blocks if b[0] == section):
                    # Every provider the README adds talks to a fake on loopback.
                    script = script.replace('type = "openai"\n', f'type = "openai"\nbase_url = "{openai.base_url}"\n')
                    rc, out = await _sh(script, shell_env, tmp_path)
                    outputs[section] = outputs.get(section, "") + out
                    assert rc == 0, f"README section {section!r}: this block failed (exit {rc}):\n{script}\n--- output:\n{out}"
        finally:
            _stop_daemon()
    for section, wanted in EXPECT.items():
        for text in wanted:
            assert text in outputs[section], f"README section {section!r}: {text!r} not in its output:\n{outputs[section]}"
    assert "GetPassWarning" not in "".join(outputs.values())
    assert "Traceback" not in "".join(outputs.values())
    assert openai.requests, "the route to OpenAI was never taken"
    assert "sk-proj-readme-test-key" not in "".join(outputs.values())
