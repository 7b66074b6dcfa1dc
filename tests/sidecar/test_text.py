"""sidecar.text: names that show as themselves, and what prints a name that would not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.cli import admin_cmd
from sidecar.text import showable, shown

CONTROLS = st.sampled_from(["\x1b", "\r", "\n", "\t", "\x00", "\x7f", "\x9b", "\u202e", "\u2066", "\u200f", "\u061c"])
TEXT = st.lists(st.one_of(st.text(max_size=6), CONTROLS), max_size=6).map("".join)


@given(TEXT)
def test_what_is_shown_is_always_showable_and_a_showable_text_is_shown_as_it_is(text: str) -> None:
    out = shown(text)
    assert showable(out)
    if showable(text):
        assert out == text
    else:
        assert out != text and "\\" in out


def test_a_name_stored_before_the_server_refused_it_cannot_drive_the_admins_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    admin_cmd._print({"devices": [{"name": "lap\x1b[2J\x1b[Htop", "id": "dvc_1"}]}, False, "devices", ("id", "name"))
    admin_cmd._print({"name": "\u202egnp.exe"}, False)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert "lap\\x1b[2J\\x1b[Htop" in out and "\\u202egnp.exe" in out
