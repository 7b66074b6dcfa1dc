"""What a test needs from the machine: a missing tool fails the test, never skips it.

`./scripts/test` installs every tool the tests use, so a missing one is a broken set-up,
and a skip would hide it (the e2e tests treat the Claude Code CLI the same way). A
capability of the platform (a mount namespace, root for a tmpfs, /proc) may be missing on
a developer's machine and skips there; under CI (`CI` set), where it is always there, its
absence fails the test too.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = bool(os.environ.get("CI"))


def require_tool(name: str, installed_by: str) -> str:
    """The path of the executable `name`; fails the test, naming what installs it, when missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: {installed_by}")
    return found


def require_files(present: bool, what: str) -> None:
    """Fail the test when files the test command installs (`what` says which, and how) are absent."""
    if not present:
        pytest.fail(f"missing: {what}")


def needs_platform(available: bool, reason: str) -> pytest.MarkDecorator:
    """Skip where the platform lacks `reason`'s capability, except under CI, where the test
    then runs and fails instead of passing unseen."""
    return pytest.mark.skipif(not available and not IN_CI, reason=reason)
