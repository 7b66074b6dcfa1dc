"""The volatile parts of a request that the cache keys ignore, each a named, listed rule.

Claude Code puts a few values into the system prompt (and into `<system-reminder>` blocks
it adds to user messages) that change while the question does not:

- ``billing-header``: the first system block, ``x-anthropic-billing-header: cc_version=
  2.1.197.7e9; cc_entrypoint=cli;``. Its suffix is derived from the session's first prompt,
  so two sessions that open with paraphrases never share a conversation prefix unless it is
  ignored. The line is billing metadata for the API, not an instruction to the model.
- ``current-date``: ``Today's date is 2026-11-28.`` The date is replaced by ``<date>``; the
  entry remembers the real date, and the stage never serves an answer that mentions a date
  or a day on a different date (see `mentions_time`).

Rules apply only to text the client software wrote (system blocks, role "system" messages
and `<system-reminder>` blocks), never to what the user typed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_DATE = rf"\d{{4}}-\d{{2}}-\d{{2}}|(?:(?:{_DAYS}),?\s+)?(?:{_MONTHS})\s+\d{{1,2}},?\s+\d{{4}}"


@dataclass(frozen=True)
class Rule:
    """One normalisation: every match of `pattern` becomes its group 1 followed by `replacement`."""

    name: str
    description: str
    pattern: re.Pattern[str]
    replacement: str
    needles: tuple[str, ...]  # a match contains one of these (a cheap test before the regex)

    def apply(self, text: str, seen: list[str]) -> str:
        """`text` with the rule applied; the replaced values are appended to `seen`."""
        if not any(n in text for n in self.needles):
            return text

        def sub(m: re.Match[str]) -> str:
            seen.append(m.group(0))
            return m.group(1) + self.replacement

        return self.pattern.sub(sub, text)


RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule(
            "billing-header",
            "the x-anthropic-billing-header line (per-session version suffix and entry point)",
            re.compile(r"^(x-anthropic-billing-header:)[^\n]*", re.MULTILINE),
            " <normalised>",
            ("x-anthropic-billing-header:",),
        ),
        Rule(
            "current-date",
            "the date in \"Today's date is ...\" / \"Today's date: ...\"",
            re.compile(rf"([Tt]oday's date(?: is|:)\s*)(?:{_DATE})"),
            "<date>",
            ("oday's date",),
        ),
    )
}

_TIME_WORDS = re.compile(
    rf"\b(?:{_DATE}|{_MONTHS}|{_DAYS}|today|tomorrow|yesterday|tonight|this (?:week|month|year)|"
    r"(?:next|last) (?:week|month|year)|current date|date is|days? ago|(?:19|20)\d{2})\b",
    re.IGNORECASE,
)


def mentions_time(text: str) -> bool:
    """Whether `text` names a date, a weekday, a month, a year or a relative day.

    An answer that does must not be served on a different date than it was made on.
    """
    return _TIME_WORDS.search(text) is not None


class Normaliser:
    """Applies the configured rules; `seen` collects the values they replaced, in order."""

    def __init__(self, names: Iterable[str]) -> None:
        unknown = [n for n in names if n not in RULES]
        if unknown:
            raise ValueError(f"unknown normalisation(s): {', '.join(unknown)} (known: {', '.join(RULES)})")
        self.rules = tuple(RULES[n] for n in names)

    def text(self, text: str, seen: list[str]) -> str:
        """`text` with every rule applied."""
        for rule in self.rules:
            text = rule.apply(text, seen)
        return text

    def bind(self, seen: list[str]) -> Callable[[str], str]:
        """A one-argument form of `text` that records into `seen`."""
        return lambda t: self.text(t, seen)


def is_system_reminder(text: str) -> bool:
    """Whether a user-message text block was written by the client software, not the user."""
    return text.lstrip().startswith("<system-reminder>")
