"""The local token estimate: the real cl100k_base tokenizer from the bundled, verified rank
file (never a download), and the parts of a request it counts."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from PIL import Image

from sidecar.providers import openai, tokens
from sidecar.testing import captures


def test_the_tokenizer_is_cl100k_base() -> None:
    enc = tokens.encoding()
    assert enc.encode_ordinary("hello world") == [15339, 1917]
    assert enc.n_vocab == 100277
    assert tokens.count_text("<|endoftext|>") > 1  # a marker in text is text, not a special token
    assert tokens.count_text("") == 0


def test_a_rank_file_that_is_not_the_published_one_is_refused(tmp_path: Path) -> None:
    data = bytearray(tokens.ranks_file().read_bytes())
    data[100] ^= 1
    bad = tmp_path / "cl100k_base.tiktoken"
    bad.write_bytes(bytes(data))
    with pytest.raises(tokens.TokenizerUnavailable, match="SHA-256 mismatch"):
        tokens.load_encoding(bad)
    with pytest.raises(tokens.TokenizerUnavailable, match="cannot read"):
        tokens.load_encoding(tmp_path / "missing.tiktoken")


def test_every_part_of_a_request_counts() -> None:
    base = {"messages": [{"role": "user", "content": "hi"}]}
    n = tokens.count_request(base)
    assert n == tokens.PER_MESSAGE + tokens.count_text("hi")
    assert tokens.count_request({**base, "system": "You are terse."}) > n
    assert tokens.count_request({**base, "system": [{"type": "text", "text": "You are terse."}]}) > n
    with_tool = {**base, "tools": [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}]}
    assert tokens.count_request(with_tool) > n + tokens.PER_TOOL
    turn = {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "plan it"}, {"type": "tool_use", "id": "t", "name": "Read", "input": {"file_path": "/a"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "file body"}]}]},
    ]}  # fmt: skip
    assert tokens.count_request(turn) == 3 * tokens.PER_MESSAGE + tokens.count_text("hi\nplan it\nRead\n" + '{"file_path":"/a"}' + "\nfile body")


def test_the_main_turn_capture_is_near_claude_codes_own_count() -> None:
    # Claude Code's /context reports about 17.9k tokens for this 76.6 KB request.
    n = tokens.count_request(captures.load("main-turn-opus").data["body"])
    assert 15_000 < n < 20_000


def _image(fmt: str, size: tuple[int, int]) -> dict[str, str]:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return {"type": "base64", "media_type": f"image/{fmt.lower()}", "data": base64.b64encode(buf.getvalue()).decode()}


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "JPEG", "WEBP"])
def test_image_sizes_are_read_from_their_headers(fmt: str) -> None:
    src = _image(fmt, (300, 200))
    assert tokens.image_size(base64.b64decode(src["data"])) == (300, 200)
    assert tokens.image_tokens(src) == round(300 * 200 / 750)


def test_large_images_are_scaled_like_anthropic_scales_them() -> None:
    assert tokens.image_tokens(_image("PNG", (4000, 3000))) == round(1_150_000 / 750)  # scaled to 1.15 megapixels
    assert tokens.image_tokens({"type": "url", "url": "https://example.test/a.png"}) == tokens.IMAGE_MAX
    assert tokens.image_tokens({"type": "base64", "media_type": "image/png", "data": "not base64!"}) == tokens.IMAGE_MAX


def test_pdfs_count_per_page() -> None:
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Pages /Count 3 >>\n" + b"".join(b"%d 0 obj << /Type /Page >>\n" % i for i in range(2, 5))
    doc = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(pdf).decode()}}
    body = {"messages": [{"role": "user", "content": [doc]}]}
    assert tokens.count_request(body) == tokens.PER_MESSAGE + 3 * tokens.PDF_PAGE


async def test_a_broken_tokenizer_falls_back_to_the_one_size_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(body: dict[str, Any]) -> int:
        raise tokens.TokenizerUnavailable("no rank file")

    monkeypatch.setattr(tokens, "count_request", broken)
    body = {"messages": [{"role": "user", "content": "hello"}]}  # 50 bytes of JSON
    raw = msgspec.json.encode(body)
    assert await openai.estimate_tokens(body) == tokens.estimate(raw, lambda: body) == math.ceil(len(raw) / tokens.BYTES_PER_TOKEN)
