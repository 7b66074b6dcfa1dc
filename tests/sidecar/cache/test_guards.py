"""The semantic tier's guards, each proven by a pair it must refuse (and one it must pass)."""

from __future__ import annotations

import pytest

from sidecar.cache.guards import check_pair, eligible, literals
from sidecar.cache.semantic import decide

REFUSED = {
    "a number": ("Add a retry with 3 attempts to fetch_user", "Add a retry with 5 attempts to fetch_user"),
    "a number word": ("Split the test file into three smaller files", "Split the test file into two smaller files"),
    "a path": ("Write unit tests for src/api/users.py please", "Write unit tests for src/api/orders.py please"),
    "a file name": ("Explain what utils.py does in detail", "Explain what helpers.py does in detail"),
    "a snake_case identifier": ("Why is parse_date so slow here?", "Why is parse_time so slow here?"),
    "a camelCase identifier": ("Rename the getUserName method everywhere", "Rename the getUserId method everywhere"),
    "a dotted identifier": ("What does os.path.join return for absolute parts?", "What does os.path.split return for absolute parts?"),
    "an ALLCAPS name": ("Read the value of HOME in the shell script", "Read the value of PATH in the shell script"),
    "a flag": ("Run pytest with -x and show me the failures", "Run pytest with --lf and show me the failures"),
    "a quoted string": ('Replace the message "file not found" in the CLI', 'Replace the message "no such file" in the CLI'),
    "a backtick span": ("Explain what `git rebase -i` does to history", "Explain what `git rebase --onto` does to history"),
    "the order of literals": ("Copy config.yaml over settings.yaml in the repo", "Copy settings.yaml over config.yaml in the repo"),
    "reordered words": ("convert the dates from local time to utc", "convert the dates from utc to local time"),
    "reordered words, even harmless ones": ("Write unit tests for users.py please", "Please write unit tests for users.py"),
    "a direction": ("Port this module from Python to Rust now", "Port this module to Rust from Python now"),
    "opposite words": ("Sort the results in ascending order by score", "Sort the results in descending order by score"),
    "opposite verbs": ("Enable strict mode in the type checker config", "Disable strict mode in the type checker config"),
    "a negation": ("Should this function raise on empty input?", "Should this function not raise on empty input?"),
}


@pytest.mark.parametrize("what", list(REFUSED))
def test_each_guard_refuses_its_pair(what: str) -> None:
    a, b = REFUSED[what]
    assert check_pair(a, b) is not None
    assert check_pair(b, a) is not None
    # Even a perfect cosine does not let the pair through.
    assert not decide(a, b, 1.0, 0.95, 4).hit


PASSED = [
    ("How do I sort a list of dicts by a key in Python?", "How can I sort a list of dicts by key in Python?"),
    ("Write unit tests for src/api/users.py please", "Please add unit tests for src/api/users.py"),
    ("Why is parse_date so slow here?", "why is parse_date this slow here?"),
    ("Explain the `git rebase -i` command", "What does the `git rebase -i` command do?"),
]


@pytest.mark.parametrize(("a", "b"), PASSED)
def test_paraphrases_with_the_same_literals_pass(a: str, b: str) -> None:
    assert check_pair(a, b) is None
    assert decide(a, b, 0.97, 0.95, 4).hit
    assert not decide(a, b, 0.94, 0.95, 4).hit  # the threshold still applies


def test_literals_are_ordered_and_typed() -> None:
    assert literals("Move src/a.py to lib/ and set MAX_RETRIES to 3 with --force, then run `make test`") == [
        "p:src/a.py",
        "p:lib/",
        "i:MAX_RETRIES",
        "n:3",
        "f:--force",
        "q:make test",
    ]
    # Words a person writes are not literals; "one" is usually a pronoun.
    assert literals("How can one make this function faster?") == []
    assert literals("don't use 'single quotes' in JSON") == ["q:single quotes", "i:JSON"]


@pytest.mark.parametrize(
    "prompt",
    ["yes", "continue", "try again", "yes, go ahead please", "go ahead and do it", "do the same for the other file",
     "continue with the next step", "try again but with more detail", "ok", "and the other one too please"],
)  # fmt: skip
def test_short_follow_ups_are_never_eligible(prompt: str) -> None:
    assert eligible(prompt, 4) is not None
    assert not decide(prompt, prompt, 1.0, 0.95, 4).hit


@pytest.mark.parametrize(
    "prompt",
    ["Why is render_page in src/auth.py so slow?", "Explain what this repository does", "Add type hints to utils.py"],
)
def test_standalone_prompts_are_eligible(prompt: str) -> None:
    assert eligible(prompt, 4) is None


def test_min_words_is_configurable() -> None:
    assert eligible("Explain decorators", 4) is not None
    assert eligible("Explain decorators", 2) is None
