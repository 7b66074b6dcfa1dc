"""Cache keys: every component that shapes an answer changes the key; nothing else does."""

from __future__ import annotations

import copy
import hashlib
import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from sidecar.cache.keys import CacheKeys, KeyMemo, Uncacheable, build_keys
from sidecar.cache.normalise import RULES, Normaliser, mentions_time
from sidecar.protocol.anthropic import parse_head
from sidecar.testing.captures import captures_dir

FIXTURES = captures_dir()
HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
    "x-api-key": "sk-ant-test",
}
NORM = Normaliser(RULES)


def body() -> dict[str, Any]:
    """A Claude-Code-shaped request with a conversation of three turns."""
    return {
        "model": "claude-opus-4-8",
        "max_tokens": 64000,
        "stream": True,
        "metadata": {"user_id": '{"session_id":"0b53a145"}'},
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "temperature": 1,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.123; cc_entrypoint=cli;"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [
            {"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}},
            {"name": "Bash", "description": "Run a command", "input_schema": {"type": "object"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>\n# currentDate\nToday's date is 2026-11-28.\n</system-reminder>"},
                    {"type": "text", "text": "list the files"},
                ],
            },
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py\nb.py"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "There are two files."}]},
            {"role": "user", "content": [{"type": "text", "text": "What does the function parse_date in a.py do?"}]},
        ],
    }


def keys(b: dict[str, Any], headers: dict[str, str] | None = None) -> CacheKeys:
    return build_keys(b, HEADERS if headers is None else headers, "/v1/messages", NORM)


def changed(path: str, value: Any) -> dict[str, Any]:
    """body() with the field at a dotted path (list indexes as numbers) set to `value`."""
    b = body()
    node: Any = b
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return b


SCOPE_CHANGES = {
    "model": ("model", "claude-sonnet-5"),
    "max_tokens": ("max_tokens", 32000),
    "temperature": ("temperature", 0.5),
    "top_p": ("top_p", 0.9),
    "top_k": ("top_k", 40),
    "stop_sequences": ("stop_sequences", ["END"]),
    "thinking": ("thinking", {"type": "disabled"}),
    "output_config": ("output_config", {"effort": "low"}),
    "tool_choice": ("tool_choice", {"type": "any"}),
    "a tool's description": ("tools.0.description", "Read a file from disk"),
    "a tool's schema": ("tools.1.input_schema", {"type": "object", "properties": {"cmd": {"type": "string"}}}),
    "the tool list": ("tools", [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}]),
    "a system block": ("system.1.text", "You are Claude Code. Be brief."),
    "a field this version does not know": ("context_management", {"edits": []}),
}


@pytest.mark.parametrize("what", list(SCOPE_CHANGES))
def test_a_change_to_any_scope_component_is_a_miss(what: str) -> None:
    base = keys(body())
    other = keys(changed(*SCOPE_CHANGES[what]))
    assert other.scope != base.scope
    assert other.prefix != base.prefix and other.exact != base.exact


@pytest.mark.parametrize(
    ("what", "path", "value"),
    [
        ("the first user text", "messages.0.content.1.text", "list all files"),
        ("a tool call", "messages.1.content.0.input", {"command": "ls -la"}),
        ("a tool result", "messages.2.content.0.content", "a.py\nc.py"),
        ("an assistant answer", "messages.3.content.0.text", "There are 2 files."),
    ],
)
def test_a_change_to_an_earlier_message_changes_the_prefix(what: str, path: str, value: Any) -> None:
    base, other = keys(body()), keys(changed(path, value))
    assert other.scope == base.scope
    assert other.prefix != base.prefix and other.exact != base.exact and other.bucket != base.bucket


def test_the_last_message_changes_only_the_exact_key() -> None:
    base = keys(body())
    other = keys(changed("messages.4.content.0.text", "What does parse_date in a.py return?"))
    assert (other.scope, other.prefix, other.bucket) == (base.scope, base.prefix, base.bucket)
    assert other.exact != base.exact
    assert other.query == "What does parse_date in a.py return?"


@pytest.mark.parametrize(
    "header",
    [
        {"anthropic-version": "2024-01-01"},
        {"anthropic-beta": "claude-code-20250219"},
        {"x-api-key": "sk-ant-other"},
        {"x-api-key": "", "authorization": "Bearer oauth-token"},
    ],
)
def test_version_beta_flags_and_credential_are_in_the_scope(header: dict[str, str]) -> None:
    assert keys(body(), {**HEADERS, **header}).scope != keys(body()).scope


def test_beta_flags_are_a_set() -> None:
    reordered = {**HEADERS, "anthropic-beta": "interleaved-thinking-2025-05-14, claude-code-20250219"}
    assert keys(body(), reordered) == keys(body())


def test_cache_control_metadata_and_stream_are_not_in_any_key() -> None:
    b = body()
    b["stream"] = False
    b["metadata"] = {"user_id": "someone else"}
    b["system"][1].pop("cache_control")
    b["tools"][0]["cache_control"] = {"type": "ephemeral"}
    b["messages"][2]["content"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    b["messages"][4]["content"][0]["cache_control"] = {"type": "ephemeral"}
    assert keys(b) == keys(body())


def test_equivalent_spellings_share_a_key() -> None:
    b = body()
    b["messages"][4]["content"] = "What does the function parse_date in a.py do?"  # a string is one text block
    b["temperature"] = 1.0
    b["system"] = copy.deepcopy(b["system"])
    assert keys(b) == keys(body())


def test_the_billing_header_is_normalised() -> None:
    b = changed("system.0.text", "x-anthropic-billing-header: cc_version=2.1.198.7e9; cc_entrypoint=sdk-cli; cch=4f2a1;")
    assert keys(b).scope == keys(body()).scope
    without = Normaliser(["current-date"])
    assert build_keys(b, HEADERS, "/v1/messages", without).scope != build_keys(body(), HEADERS, "/v1/messages", without).scope


def test_the_date_is_normalised_and_remembered() -> None:
    b = changed("messages.0.content.0.text", "<system-reminder>\n# currentDate\nToday's date is 2026-11-29.\n</system-reminder>")
    k, base = keys(b), keys(body())
    assert k.exact == base.exact
    assert base.volatile != k.volatile
    assert "Today's date is 2026-11-28" in base.volatile
    without = Normaliser(["billing-header"])
    assert build_keys(b, HEADERS, "/v1/messages", without).exact != build_keys(body(), HEADERS, "/v1/messages", without).exact


def test_dates_in_a_system_prompt_are_normalised_in_every_listed_form() -> None:
    for text in ("Today's date: 2025-06-01", "Today's date is Friday, November 28, 2026.", "today's date is 2026-11-28"):
        seen: list[str] = []
        assert "<date>" in NORM.text(text, seen)
        assert seen


def test_dates_the_user_typed_are_not_normalised() -> None:
    typed = "Today's date is 2026-11-28. What day of the week is it?"
    a = keys(changed("messages.4.content.0.text", typed))
    b = keys(changed("messages.4.content.0.text", typed.replace("28", "29")))
    assert a.exact != b.exact


def test_the_rules_are_listed_by_name() -> None:
    assert list(RULES) == ["billing-header", "current-date"]
    with pytest.raises(ValueError, match="unknown normalisation"):
        Normaliser(["billing-header", "git-status"])


def test_mentions_time() -> None:
    assert mentions_time("Today is Friday.")
    assert mentions_time("The release was on 2026-11-28")
    assert mentions_time("see you tomorrow")
    assert not mentions_time("The function returns a list of paths.")


def test_query_and_bucket_of_a_first_turn_keep_reminders_exact() -> None:
    b = body()
    b["messages"] = [b["messages"][0]]
    k = keys(b)
    assert k.query == "list the files"
    other = copy.deepcopy(b)
    other["messages"][0]["content"][1]["text"] = "show me the files"
    assert keys(other).bucket == k.bucket
    reminder = copy.deepcopy(b)
    reminder["messages"][0]["content"][0]["text"] = "<system-reminder>\nThe skills are: none\n</system-reminder>"
    assert keys(reminder).bucket != k.bucket


@pytest.mark.parametrize(
    "last",
    [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": "what is this"}, {"type": "image", "source": {}}]},
        {"role": "assistant", "content": "Sure, here is"},
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>only context</system-reminder>"}]},
    ],
)
def test_only_plain_user_text_has_a_query(last: dict[str, Any]) -> None:
    b = body()
    b["messages"][-1] = last
    k = keys(b)
    assert k.query is None and k.bucket is None


@pytest.mark.parametrize("bad", [{}, {"messages": []}, {"messages": "hi"}, {"messages": [1]}])
def test_a_body_without_messages_is_uncacheable(bad: dict[str, Any]) -> None:
    with pytest.raises(Uncacheable):
        keys(bad)


def test_claude_code_fixtures_key_and_normalise() -> None:
    """Real captured bodies: keys are stable across a re-serialisation and the billing line is normalised."""
    for name in ("main-turn-opus.json", "after-bash-tool-result.json", "explore-subagent-haiku.json"):
        capture = json.loads((FIXTURES / name).read_text())
        b, headers = capture["body"], CIMultiDict(capture["headers"])
        k = build_keys(b, headers, "/v1/messages", NORM)
        assert k == build_keys(json.loads(json.dumps(b)), headers, "/v1/messages", NORM)
        assert any(v.startswith("x-anthropic-billing-header:") for v in k.volatile)
        assert any(v.startswith("Today's date is") for v in k.volatile)


def test_the_memo_knows_a_repeated_body_without_decoding_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.cache import keys as keys_mod

    memo = KeyMemo(NORM, size=2)
    keyed: list[int] = []  # bodies keyed (their messages decoded and canonicalised)
    real = keys_mod._conversation_keys

    def counted(*a: Any) -> CacheKeys:
        keyed.append(1)
        return real(*a)

    monkeypatch.setattr(keys_mod, "_conversation_keys", counted)

    def decode(raw: bytes) -> Callable[[], dict[str, Any]]:
        return lambda: pytest.fail("a well-formed body is keyed from its raw bytes, never decoded whole")

    raw = json.dumps(body()).encode()
    first = memo.keys(raw, decode(raw), HEADERS, "/v1/messages")
    assert first == keys(body())
    keyed.clear()
    assert memo.keys(raw, decode(raw), HEADERS, "/v1/messages") == first
    assert len(keyed) == 0  # a repeat is not keyed again
    other_key = {**HEADERS, "x-api-key": "sk-ant-other"}
    assert memo.keys(raw, decode(raw), other_key, "/v1/messages").scope != first.scope  # headers count too
    third = json.dumps(changed("max_tokens", 5)).encode()
    memo.keys(third, decode(third), HEADERS, "/v1/messages")
    memo.keys(raw, decode(raw), HEADERS, "/v1/messages")  # evicted by the size bound: keyed again
    assert len(keyed) == 3


def test_the_memo_holds_a_bounded_amount_of_prompt_text() -> None:
    """Huge prompts (a 2 MB paste each) are keyed as usual, but the memo keeps no more text
    than its byte cap, whatever the size of the bodies it saw."""
    memo = KeyMemo(NORM)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for n in range(24):
            text = f"paste {n} " + "lorem ipsum dolor sit amet " * 80_000  # ~2.2 MB of user text
            raw = json.dumps({**body(), "messages": [{"role": "user", "content": text}]}).encode()
            got = memo.keys(raw, lambda raw=raw: dict(json.loads(raw)), HEADERS, "/v1/messages")  # type: ignore[misc]
            assert got.query == text.strip()
            del raw, text, got
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert held < 6_000_000, f"{held / 1e6:.1f} MB held"  # the 4 MiB cap, and slack
    # Small bodies are still memoised.
    raw = json.dumps(body()).encode()
    first = memo.keys(raw, lambda: dict(json.loads(raw)), HEADERS, "/v1/messages")
    assert memo.keys(raw, lambda: pytest.fail("decoded again"), HEADERS, "/v1/messages") is first


def test_a_repeat_is_found_without_digesting_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memo compares the bytes it kept instead of hashing 76 KB on every request."""
    memo = KeyMemo(NORM)
    raw = json.dumps({**body(), "messages": [{"role": "user", "content": "x" * 80_000}]}).encode()
    first = memo.keys(raw, lambda: dict(json.loads(raw)), HEADERS, "/v1/messages")
    digested: list[int] = []
    real = hashlib.sha256

    def counting(data: bytes = b"") -> Any:
        digested.append(len(data))
        return real(data)

    monkeypatch.setattr("sidecar.cache.keys.hashlib.sha256", counting)
    again = bytes(bytearray(raw))  # equal bytes, another object (as a new request brings)
    assert memo.keys(again, lambda: pytest.fail("decoded again"), HEADERS, "/v1/messages") is first
    assert max(digested, default=0) < 1024


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from("ab")), min_size=1, max_size=12))
def test_the_memo_answers_what_keying_answers(steps: list[tuple[int, str]]) -> None:
    """Bodies of the same length, head and tail that differ only in the middle (the memo's
    probe is the same for them) still get their own keys: equal bytes are checked."""
    memo = KeyMemo(NORM, size=3)
    pad = "y" * 3000
    for n, letter in steps:
        middle = [{"role": "user", "content": pad + letter * 5 + pad}, {"role": "assistant", "content": "ok"}]
        b = {**body(), "messages": [*middle * (n % 2 + 1), {"role": "user", "content": f"question {n}"}]}
        raw = json.dumps(b).encode()
        assert memo.keys(raw, lambda raw=raw: dict(json.loads(raw)), HEADERS, "/v1/messages") == keys(b)  # type: ignore[misc]


# --- a new turn of a conversation: the scope found by the raw bytes of every field but the
# messages gives the keys build_keys gives, and never another body's scope.

_dates = st.sampled_from(["", " Today's date is 2026-12-06.", " Today's date is 2026-12-07.", " <env>Today's date: 2026-12-05</env>"])
_scope_fields = st.fixed_dictionaries(
    {"model": st.sampled_from(["claude-opus-4-8", "claude-haiku-4-5"])},
    optional={
        "system": st.one_of(
            st.builds(lambda d: "You are Claude Code." + d, _dates),
            st.builds(lambda d: [{"type": "text", "text": "You are Claude Code." + d, "cache_control": {"type": "ephemeral"}}], _dates),
        ),
        "tools": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["Read", "Bash"]), "input_schema": st.just({"type": "object"})}), max_size=2),
        "temperature": st.sampled_from([1, 1.0, 0.5]),
        "max_tokens": st.integers(1, 64000),
        "metadata": st.fixed_dictionaries({"user_id": st.text(max_size=4)}),
        "stream": st.booleans(),
        "x-unknown": st.one_of(st.none(), st.text(max_size=3), st.lists(st.integers(), max_size=2)),
    },
)
_turn = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.one_of(st.text(max_size=12), st.builds(lambda d: [{"type": "text", "text": "<system-reminder>x" + d + "</system-reminder>"}, {"type": "text", "text": "hi"}], _dates))}),
    min_size=1,
    max_size=3,
)
_headers = st.sampled_from([{"x-api-key": "k1"}, {"x-api-key": "k2"}, {"x-api-key": "k1", "anthropic-beta": "b1, b2"}, {"authorization": "Bearer t"}])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_scope_fields, _turn, _headers, st.booleans()), min_size=1, max_size=5), st.sampled_from(["/v1/messages", "/anthropic/v1/messages"]))
def test_keys_of_new_bodies_equal_build_keys_with_scopes_remembered(bodies: list[tuple[dict[str, Any], list[dict[str, Any]], dict[str, str], bool]], endpoint: str) -> None:
    memo, given = KeyMemo(NORM), KeyMemo(NORM)  # the second is handed the request head's scan
    for fields, turn, headers, spaced in bodies:
        body = {**fields, "messages": turn}
        raw = json.dumps(body, separators=None if spaced else (",", ":")).encode()
        hdrs = CIMultiDict(headers)
        want = build_keys(json.loads(raw), hdrs, endpoint, NORM)
        assert memo.keys(raw, _decoder(raw), hdrs, endpoint) == want
        assert given.keys(raw, _decoder(raw), hdrs, endpoint, parse_head(raw).fields) == want
        # the same fields with the next turn: its scope comes from the memo
        longer = {**fields, "messages": [*turn, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "next"}]}
        raw2 = json.dumps(longer).encode()
        assert memo.keys(raw2, _decoder(raw2), hdrs, endpoint) == build_keys(longer, hdrs, endpoint, NORM)
        assert given.keys(raw2, _decoder(raw2), hdrs, endpoint, parse_head(raw2).fields) == build_keys(longer, hdrs, endpoint, NORM)


def test_a_new_body_is_scanned_once_when_the_head_was_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head's scan of the body (its top-level fields) is what the keys read: the body is
    not scanned a second time."""
    from sidecar.cache import keys as keys_mod

    raw = json.dumps(body()).encode()
    fields = parse_head(raw).fields
    monkeypatch.setattr(keys_mod, "_fields", lambda raw: pytest.fail("the body was scanned again"))
    assert KeyMemo(NORM).keys(raw, _decoder(raw), HEADERS, "/v1/messages", fields) == keys(body())


def _decoder(raw: bytes) -> Callable[[], dict[str, Any]]:
    return lambda: dict(json.loads(raw))


def test_a_new_turn_decodes_only_its_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scope of a body whose other fields were seen is not decoded again."""
    from sidecar.cache import keys as keys_mod

    memo = KeyMemo(NORM)
    fields = {"model": "m", "system": "s" * 1000, "tools": [{"name": "Read"}]}
    first = json.dumps({**fields, "messages": [{"role": "user", "content": "a"}]}).encode()
    memo.keys(first, lambda: json.loads(first), CIMultiDict(), "/v1/messages")
    calls: list[object] = []
    real = keys_mod._scope
    def counted(*a: Any) -> str:
        calls.append(a)
        return real(*a)

    monkeypatch.setattr(keys_mod, "_scope", counted)
    second = json.dumps({**fields, "messages": [{"role": "user", "content": "b"}]}).encode()
    got = memo.keys(second, lambda: pytest.fail("the body was decoded whole"), CIMultiDict(), "/v1/messages")
    assert calls == []
    monkeypatch.setattr(keys_mod, "_scope", real)
    assert got == build_keys(json.loads(second), CIMultiDict(), "/v1/messages", NORM)
    monkeypatch.setattr(keys_mod, "_scope", counted)
    other = json.dumps({**fields, "tools": [], "messages": [{"role": "user", "content": "b"}]}).encode()
    memo.keys(other, lambda: json.loads(other), CIMultiDict(), "/v1/messages")
    assert len(calls) == 1  # another scope is keyed afresh
