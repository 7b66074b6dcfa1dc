"""Text the sidecar passes on or stores must be valid UTF-8."""

from __future__ import annotations


def encodable(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (no lone surrogate, as undecodable bytes leave)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
