"""`claude-sidecar tui`: arguments that cannot work are refused before any screen is drawn."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sidecar.cli import cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:8787"], "--url needs --token"),
        (["--token", "t"], "--token goes with --url"),
        (["--url", "ftp://host", "--token", "t"], "is not an http(s) URL"),
        (["--demo", "--url", "http://127.0.0.1:8787", "--token", "t"], "--demo shows sample data"),
        (["--refresh", "0"], "not in the range 0.05<=x<=5.0"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["tui", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_help_names_the_keys() -> None:
    result = CliRunner().invoke(cli, ["tui", "--help"])
    assert result.exit_code == 0 and "q quits" in result.output and "--demo" in result.output
