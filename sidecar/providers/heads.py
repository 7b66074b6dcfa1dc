"""Request heads that cannot smuggle: the target is re-quoted, every field is checked.

The lean HTTP/1.1 client writes its request heads itself, so nothing a client controls may
reach them unchecked: a CR, LF or space in the target, or a CR/LF in a header value, would
end the request early and start another one on the pooled connection, whose answer then
goes to the next client. The rules are h11's (a well-kept HTTP/1.1 library; the tests check
this builder against it byte for byte), made a little stricter where aiohttp's client is:
no control character other than HTAB in a value. Whatever breaks them is refused before a
byte is written, and the client gets a 400.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence

from sidecar.text import encodable

# RFC 9110 token (h11's `token`): a method or a header name.
_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
# A field value: visible characters (any non-ASCII one is UTF-8 obs-text on the wire)
# separated by runs of SP/HTAB, nothing at either end; empty is fine. h11 also lets other
# control characters through; aiohttp's client does not, so neither do we.
_VCHAR = r"[^\x00-\x20\x7f]"
_VALUE = rf"(?:{_VCHAR}+(?:[ \t]+{_VCHAR}+)*)?"
_METHOD_RE = re.compile(_TOKEN)
_NAMES_RE = re.compile(rf"(?:{_TOKEN}\n)*{_TOKEN}")
# The fast form of _VALUE over values joined by LF: no control character but HTAB (and the
# LF separators, which are counted), no SP/HTAB at either end of a value.
_CTL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WS = (" ", "\t")
_WS_EDGES = (" \n", "\t\n", "\n ", "\n\t")
_NAME_RE = re.compile(_TOKEN)
_VALUE_RE = re.compile(_VALUE)
# h11's request-target: one or more visible ASCII characters.
_TARGET_RE = re.compile(r"[\x21-\x7e]+")
# Every visible ASCII character that quote() would otherwise escape: a target that is
# already valid passes through byte for byte; anything else (SP, CTLs, non-ASCII) is escaped.
_TARGET_SAFE = "!\"#$%&'()*+,/:;<=>?@[\\]^`{|}~"
# The fields the head builder writes itself: a second one from a caller would be a second framing.
OWNED = frozenset({"host", "content-length", "transfer-encoding"})


class UnsafeHead(ValueError):
    """A request head that cannot be written safely; nothing was sent (the client gets a 400)."""


def safe_target(target: str) -> str:
    """`target` (a path and query as the client encoded it) with every byte that is not visible
    ASCII percent-encoded, so it can never end the request line early."""
    if _TARGET_RE.fullmatch(target):
        return target
    # aiohttp decoded the client's raw bytes as UTF-8 with surrogateescape: undo that exactly.
    return urllib.parse.quote(target, safe=_TARGET_SAFE, errors="surrogateescape") or "/"


def check_fields(headers: Sequence[tuple[str, str]]) -> None:
    """Raise UnsafeHead unless every name is a token and every value a valid, UTF-8-encodable
    field value, and no field is one the head builder owns."""
    if not headers:
        return
    # One check over all names (and one over all values) instead of one per field; a LF
    # inside a name or value would pass as a separator, so the separators are counted too.
    names = "\n".join([k for k, _ in headers])
    values = "\n".join([v for _, v in headers])
    seps = len(headers) - 1
    if _NAMES_RE.fullmatch(names) is None or names.count("\n") != seps:
        bad = next(k for k, _ in headers if _NAME_RE.fullmatch(k) is None)
        raise UnsafeHead(f"the header name {bad!r} is not a valid HTTP token")
    if (
        values.count("\n") != seps
        or _CTL_RE.search(values) is not None
        or values.startswith(_WS)
        or values.endswith(_WS)
        or any(edge in values for edge in _WS_EDGES)
    ):
        bad = next(k for k, v in headers if _VALUE_RE.fullmatch(v) is None)
        raise UnsafeHead(f"the value of header {bad!r} holds a control character or leading/trailing space")
    try:
        values.encode()
    except UnicodeEncodeError:
        bad = next(k for k, v in headers if not encodable(v))
        raise UnsafeHead(f"the value of header {bad!r} is not valid UTF-8") from None
    if not OWNED.isdisjoint(names.lower().split("\n")):
        bad = next(k for k, _ in headers if k.lower() in OWNED)
        raise UnsafeHead(f"the header {bad!r} is set by the sidecar itself")


# Heads already checked and spelled, by everything but their Content-Length: a client sends
# the same headers on every turn of a session, so checking them again would cost the request
# path tens of microseconds for nothing. Bounded; emptied when full.
HEAD_MEMO_MAX = 256
_heads: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], bytes] = {}


def build_head(method: str, target: str, host: str, headers: Sequence[tuple[str, str]], content_length: int | None) -> bytes:
    """An HTTP/1.1 request head; raises UnsafeHead for anything h11 would refuse to send."""
    sig = (method, target, host, tuple(headers))
    prefix = _heads.get(sig)
    if prefix is None:
        prefix = _head_prefix(method, target, host, headers)
        if len(_heads) >= HEAD_MEMO_MAX:
            _heads.clear()
        _heads[sig] = prefix
    if content_length is None:
        return prefix + b"\r\n"
    return b"%sContent-Length: %d\r\n\r\n" % (prefix, content_length)


def _head_prefix(method: str, target: str, host: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """The head's lines up to (not including) Content-Length and the blank line, checked."""
    if _METHOD_RE.fullmatch(method) is None:
        raise UnsafeHead(f"the method {method!r} is not a valid HTTP token")
    if _TARGET_RE.fullmatch(target) is None:
        raise UnsafeHead(f"the request target {target!r} holds bytes that are not visible ASCII")
    if _VALUE_RE.fullmatch(host) is None or not host:
        raise UnsafeHead(f"the Host {host!r} is not a valid header value")
    check_fields(headers)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n").encode()
