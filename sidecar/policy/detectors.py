"""The curated detectors of secrets and personal data in outgoing prompts.

Each detector is a regular expression plus, where the shape alone is not enough, a check
on the match (a Luhn sum, a known TLD, "not a placeholder"). The bar is *no redaction of
ordinary code that merely looks similar*: documentation example keys, `${VAR}` templates,
`git@github.com:org/repo`, version numbers, dates, IP addresses, long numeric ids and the
public test card numbers are all left alone (tests/sidecar/policy/test_detectors.py holds
a positive and a negative corpus per detector).

Speed: a regex pass over a 100 KB prompt costs about a millisecond, a substring search a
hundredth of that. So a detector with `anchors` (a fixed string every match contains: a
key's prefix, the `@` of an address, the `://` of a URL) runs its regex only in a small
window around each place an anchor occurs; the others start with a character class, which
lets the regex engine skip ahead to candidate positions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# A last word on a match: the sensitive part, and the whole match for its context.
Check = Callable[[str, "re.Match[str]"], bool]


@dataclass(frozen=True)
class Detector:
    """One kind of sensitive text."""

    name: str
    kind: str  # secret | pii | custom
    label: str  # for messages: "an AWS access key"
    pattern: re.Pattern[str]
    anchors: tuple[str, ...] = ()  # every match contains one of these
    before: int = 0  # how far before its anchor a match may start
    after: int = 512  # how far after the anchor's start a match may end
    group: int = 0  # the part of the match that is sensitive (and gets redacted)
    check: Check | None = None

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        """Spans of `text` this detector flags, in order."""
        matches = self._anchored(text) if self.anchors else self.pattern.finditer(text)
        for m in matches:
            start, end = m.span(self.group)
            if start < end and (self.check is None or self.check(text[start:end], m)):
                yield start, end

    def _anchored(self, text: str) -> Iterator[re.Match[str]]:
        """The matches in windows around the anchors' occurrences."""
        hits: list[int] = []
        for anchor in self.anchors:
            i = text.find(anchor)
            while i >= 0:
                hits.append(i)
                i = text.find(anchor, i + 1)
        last_end = 0
        for i in sorted(hits):
            if i < last_end:
                continue
            for m in self.pattern.finditer(text, max(0, i - self.before), i + self.after):
                # The window's end hides what follows from lookaheads: match again in full.
                full = self.pattern.match(text, m.start())
                if full is not None and full.start() >= last_end:
                    last_end = full.end()
                    yield full


# ---------------------------------------------------------------- checks

_PLACEHOLDER_WORDS = ("example", "xxxx", "your", "placeholder", "dummy", "redacted", "sample", "changeme", "insert")
_REPEAT = re.compile(r"(.)\1{4,}")


def not_placeholder(value: str, m: re.Match[str] | None = None) -> bool:
    """False for values that are obviously stand-ins: `xxxxx`, `<your-key>`, `EXAMPLE` keys."""
    low = value.lower()
    return not (any(w in low for w in _PLACEHOLDER_WORDS) or _REPEAT.search(value) or "..." in value)


def _mixed(value: str, m: re.Match[str] | None = None) -> bool:
    """A random-looking token: letters and digits, not a word or a number."""
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value) and not_placeholder(value)


def _random_letters(value: str, m: re.Match[str]) -> bool:
    """Random mixed-case letters (a Hugging Face token), not a CamelCase identifier."""
    upper = sum(c.isupper() for c in value)
    lower = sum(c.islower() for c in value)
    return upper >= 8 and lower >= 8 and not_placeholder(value)


_PASSWORD_PLACEHOLDERS = frozenset(
    {"password", "passwd", "pass", "pw", "pwd", "secret", "changeme", "hunter2", "admin", "root", "user", "guest", "test", "token"}
)


def _real_password(value: str, m: re.Match[str]) -> bool:
    """Not a template (`${DB_PASS}`, `{password}`, `<pw>`, `%s`, `$VAR`), a stock word, or
    the user name again (`postgres:postgres@`, the stock credentials of dev containers)."""
    if value[0] in "${<%*[(" or value.lower() in _PASSWORD_PLACEHOLDERS:
        return False
    if m.re.groups >= 2 and m.group(1) == value:
        return False
    return not_placeholder(value) and not set(value) <= {"*", "x", "X", "."}


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum that every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Published test numbers of the card networks and payment processors: not personal data.
TEST_CARDS = frozenset(
    {
        "4242424242424242", "4000056655665556", "4111111111111111", "4012888888881881",
        "4000000000000002", "4000000000009995", "4000000000000077", "5555555555554444",
        "5200828282828210", "5105105105105100", "2223003122003222", "378282246310005",
        "371449635398431", "378734493671000", "6011111111111117", "6011000990139424",
        "3056930009020004", "36227206271667", "3566002020360505", "6200000000000005",
    }
)  # fmt: skip
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|6(?:011|5|4[4-9])|35(?:2[89]|[3-8])|3(?:0[0-5]|[68]))")
_CARD_GROUPS = re.compile(r"^\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?$|^\d{4}([ -])\d{6}\2\d{4,5}$")


def _card(value: str, m: re.Match[str]) -> bool:
    """13-19 digits, written plain or in the usual groups, of a known network, Luhn-valid."""
    digits = value.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or (digits != value and not _CARD_GROUPS.match(value)):
        return False
    return bool(_CARD_PREFIX.match(digits)) and luhn_ok(digits) and digits not in TEST_CARDS


_PHONE_DIGITS = re.compile(r"\d")


def _phone(value: str, m: re.Match[str]) -> bool:
    """An international number (8-15 digits) written with separators, or compact inside
    quotes (`"+14155550100"`); a North American one whose area code and exchange do not
    start with 0 or 1. A compact `+digits` elsewhere is more often a diff line or a sum."""
    digits = "".join(_PHONE_DIGITS.findall(value))
    if len(set(digits)) <= 2:
        return False
    if not value.startswith("+"):
        return digits[0] not in "01" and digits[3] not in "01"
    if not 8 <= len(digits) <= 15:
        return False
    before = m.string[m.start() - 1 : m.start()]
    after = m.string[m.end() : m.end() + 1]
    return any(c in value for c in " .-(") or (before in ("\"", "'") and after == before)


# Two-letter ccTLDs are all accepted except those that are mostly file extensions in code.
_FILE_EXTENSIONS = frozenset({"py", "rs", "md", "sh", "cc", "mk", "so", "js", "ts", "rb", "go", "h", "hh", "cs"})
_GTLDS = frozenset(
    """com org net edu gov mil int info biz name pro aero coop museum io ai app dev cloud tech
    online site xyz shop store blog page email mail me tv co us uk eu de fr nl ch at se no dk
    fi es it pt pl cz ru ua jp cn kr in au nz ca br mx ar za sg hk tw il ie be lu global
    company team studio design agency solutions systems network digital services software
    academy health finance bank money law media news social works zone life live world""".split()
)
_RESERVED_DOMAINS = ("example.com", "example.org", "example.net", "localhost")
_RESERVED_TLDS = ("example", "test", "invalid", "localhost", "local", "internal")
_NOREPLY = re.compile(r"^(?:no-?reply|do-?not-?reply|mailer-daemon|postmaster)$", re.IGNORECASE)
_EMAIL_PARTS = re.compile(r"^(.+)@(.+)$")


def _email(value: str, m: re.Match[str]) -> bool:
    """A deliverable-looking address at a real TLD, not an example domain nor a no-reply box."""
    parts = _EMAIL_PARTS.match(value)
    if parts is None:
        return False
    local, domain = parts.group(1), parts.group(2).lower()
    tld = domain.rsplit(".", 1)[-1]
    if tld in _RESERVED_TLDS or domain in _RESERVED_DOMAINS or domain.endswith(tuple("." + d for d in _RESERVED_DOMAINS)):
        return False
    if len(tld) == 2:
        return tld not in _FILE_EXTENSIONS and not _NOREPLY.match(local)
    return tld in _GTLDS and not _NOREPLY.match(local)


# ---------------------------------------------------------------- the detectors

_B = r"(?<![A-Za-z0-9_-])"  # not inside a longer token
_E = r"(?![A-Za-z0-9_-])"


def _secret(
    name: str,
    label: str,
    pattern: str,
    anchors: tuple[str, ...],
    check: Check | None = not_placeholder,
    *,
    group: int = 0,
    before: int = 0,
    after: int = 512,
) -> Detector:
    return Detector(name, "secret", label, re.compile(pattern), anchors, before, after, group, check)


SECRETS: tuple[Detector, ...] = (
    _secret(
        "aws_access_key", "an AWS access key id",
        rf"{_B}(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{{16}}{_E}",
        ("AKIA", "ASIA", "ABIA", "ACCA"),
    ),
    _secret(
        "aws_secret_key", "an AWS secret access key",
        r"(?i:aws_?secret_?(?:access_?)?key|secretaccesskey)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
        ("secret", "Secret", "SECRET"), _mixed, group=1, before=4,
    ),
    _secret("google_api_key", "a Google API key", rf"{_B}AIza[0-9A-Za-z_-]{{35}}{_E}", ("AIza",)),
    _secret("google_oauth_token", "a Google OAuth access token", rf"{_B}ya29\.[0-9A-Za-z_-]{{20,}}", ("ya29.",)),
    _secret(
        "azure_storage_key", "an Azure storage account key",
        r"AccountKey=([A-Za-z0-9+/]{86}==)", ("AccountKey=",), group=1,
    ),
    _secret(
        "anthropic_key", "an Anthropic API key",
        rf"{_B}sk-ant-(?:api|admin|oat|sid)\d\d-[A-Za-z0-9_-]{{20,}}", ("sk-ant-",),
    ),
    _secret(
        "openai_key", "an OpenAI API key",
        rf"{_B}sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{{40,}}|[A-Za-z0-9_-]{{16,}}T3BlbkFJ[A-Za-z0-9_-]{{16,}})",
        ("sk-",),
    ),
    _secret(
        "github_token", "a GitHub token",
        rf"{_B}(?:gh[pousr]_[A-Za-z0-9]{{36,251}}|github_pat_[A-Za-z0-9_]{{60,255}}){_E}",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    _secret("gitlab_token", "a GitLab token", rf"{_B}glpat-[A-Za-z0-9_-]{{20,}}", ("glpat-",)),
    _secret("slack_token", "a Slack token", rf"{_B}xox[abposr]-\d{{6,}}-[0-9A-Za-z-]{{8,}}", ("xox",)),
    _secret(
        "slack_webhook", "a Slack webhook URL",
        r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,}",
        ("hooks.slack.com",), before=8,
    ),
    _secret(
        "stripe_key", "a Stripe secret key",
        rf"{_B}(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{{24,}}{_E}", ("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
    ),
    _secret("npm_token", "an npm token", rf"{_B}npm_[A-Za-z0-9]{{36}}{_E}", ("npm_",), _mixed),
    _secret("pypi_token", "a PyPI token", r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}", ("pypi-AgEIcHlwaS5vcmc",)),
    _secret("huggingface_token", "a Hugging Face token", rf"{_B}hf_[A-Za-z]{{34}}{_E}", ("hf_",), _random_letters),
    _secret(
        "jwt", "a JSON Web Token",
        rf"{_B}eyJ[A-Za-z0-9_-]{{10,}}\.eyJ[A-Za-z0-9_-]{{10,}}\.[A-Za-z0-9_-]{{16,}}", ("eyJ",), after=16384,
    ),
    _secret(
        "bearer_token", "a bearer token",
        r"(?<![A-Za-z])[Bb]earer\s+([A-Za-z0-9._~+/-]{24,}=*)(?![A-Za-z0-9._~+/=-])", ("Bearer", "bearer"), _mixed, group=1,
    ),
    _secret(
        "private_key", "a private key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\s:,.\\]|-(?!----)){40,}(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)?",
        ("-----BEGIN ",), None, after=65536,
    ),
    _secret(
        "password_in_url", "a password in a URL or connection string",
        r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{1,20}://([^\s:/?#@\"'<>]*):([^\s/?#@\"'<>]+)@[^\s/?#@\"'<>]+",
        ("://",), _real_password, group=2, before=22,
    ),
    _secret(
        "connection_string_password", "a password in a connection string",
        r"(?m)(?:(?<=;)|(?<=; )|(?<=[\"']))(?i:password|pwd)\s*=\s*([^;'\"\s]{4,})(?=\s*;|[\"']|\s*$)",
        ("Password", "password", "PASSWORD", "Pwd", "PWD", "pwd"), _real_password, group=1,
    ),
)  # fmt: skip

PII: tuple[Detector, ...] = (
    Detector(
        "email", "pii", "an email address",
        re.compile(
            r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|:\S|\.[A-Za-z0-9])"
        ),
        ("@",), 64, 260, 0, _email,
    ),
    # Each branch starts with its first character and looks behind it from there, so the
    # engine can skip to a `+`, `(` or digit instead of trying every position.
    Detector(
        "phone", "pii", "a phone number",
        re.compile(
            r"(?:\+(?<![\w+/=.-].)\d{1,3}(?:[ .-]?\(\d{1,4}\)|[ .-]?\d{1,4}){2,6}"
            r"|\((?<![\w+/=.-].)\d{3}\) ?\d{3}-\d{4}"
            r"|\d(?<![\w+/=.-]\d)\d\d([-. ])\d{3}\1\d{4})(?![\w.-]?\d)"
        ),
        check=_phone,
    ),
    Detector(
        "card_number", "pii", "a payment card number",
        re.compile(r"\d(?<![\w.+/-]\d)(?:[ -]?\d){12,18}(?![\w-]|\.\d)"),
        check=_card,
    ),
)  # fmt: skip

DETECTORS: dict[str, Detector] = {d.name: d for d in (*SECRETS, *PII)}


def custom(name: str, pattern: str) -> Detector:
    """A detector for an org's own regular expression."""
    return Detector(name, "custom", f"a match of the custom guardrail {name!r}", re.compile(pattern))
