"""Text the sidecar passes on, stores or prints: valid UTF-8, and names that show as themselves."""

from __future__ import annotations

import re

# C0 and C1 controls (ESC starts a terminal's escape sequences, CR rewrites a line) and the
# marks that reorder what a terminal shows (a right-to-left override spells "exe.gnp" as "png.exe").
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def encodable(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (no lone surrogate, as undecodable bytes leave)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def showable(text: str) -> bool:
    """Whether `text` shows as itself wherever it is printed: a name a developer or an admin
    chose reaches other admins' terminals (`admin devices list`), so it may not drive them."""
    return _UNSHOWABLE.search(text) is None


def shown(text: str) -> str:
    """`text` with what would not show as itself escaped (`\\x1b`, `\\u202e`): safe to print."""
    return _UNSHOWABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)
