"""Literal guards of the semantic tier: cheap checks a similar pair must also pass.

An embedding scores "migrate from pandas to polars" and "... from polars to pandas" at
0.985, and "retry 3 times" against "retry 5 times" nearly as high. So a candidate whose
cosine passes the threshold is still refused when (research/semantic-cache.md §5.3):

- its ordered list of literals differs: numbers (and number words), paths and file names,
  identifiers (snake_case, camelCase, dotted, ALLCAPS), flags, quoted strings and
  backtick spans;
- it has the same words in a different order;
- one side has a word whose opposite the other side has (enable/disable, ...);
- one side is negated and the other is not.

`eligible` says whether a final prompt may be matched at all: short follow-ups such as
"yes", "continue" or "try again" never are.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache

_QUOTED = re.compile(r"`([^`]+)`|\"([^\"\n]+)\"|(?<![\w'])'([^'\n]+)'(?![\w'])|“([^”\n]+)”")
_TOKEN = re.compile(r"[\w./\\:~@#$%+-]+")
_NUMBER = re.compile(r"^[+-]?\d[\d_,]*(?:\.\d+)*[a-z%]*$", re.IGNORECASE)
_PATH = re.compile(r"[/\\]|^\.{1,2}[/\\]|^~|^\w[\w-]*\.[A-Za-z][A-Za-z0-9]{0,7}$")
_SNAKE = re.compile(r"^_*[A-Za-z0-9]+(?:_[A-Za-z0-9]+)+_*$")
_CAMEL = re.compile(r"^[a-z][a-z0-9]*[A-Z][A-Za-z0-9]*$|^[A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*$")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:\(\))?$")
_ALLCAPS = re.compile(r"^[A-Z][A-Z0-9]+$")
_FLAG = re.compile(r"^--?[A-Za-z][\w-]*$")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
    if w != "one"  # "which one", "how can one": a pronoun far more often than a count
} | {"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1000000"}

_OPPOSITES = [
    ("enable", "disable"), ("add", "remove"), ("ascending", "descending"), ("increase", "decrease"),
    ("start", "stop"), ("open", "close"), ("show", "hide"), ("before", "after"), ("min", "max"),
    ("minimum", "maximum"), ("true", "false"), ("on", "off"), ("allow", "deny"), ("accept", "reject"),
    ("include", "exclude"), ("import", "export"), ("upload", "download"), ("push", "pull"),
    ("encode", "decode"), ("encrypt", "decrypt"), ("compress", "decompress"), ("lock", "unlock"),
    ("serialize", "deserialize"), ("install", "uninstall"), ("expand", "collapse"), ("left", "right"),
    ("first", "last"), ("sync", "async"), ("synchronous", "asynchronous"), ("public", "private"),
    ("read", "write"), ("input", "output"), ("client", "server"), ("horizontal", "vertical"),
    ("upper", "lower"), ("uppercase", "lowercase"), ("inner", "outer"), ("with", "without"),
    ("more", "less"), ("faster", "slower"), ("larger", "smaller"), ("bigger", "smaller"),
    ("longer", "shorter"), ("higher", "lower"), ("valid", "invalid"), ("success", "failure"),
    ("pass", "fail"), ("up", "down"), ("above", "below"), ("inside", "outside"), ("min", "max"),
    ("old", "new"), ("top", "bottom"), ("head", "tail"), ("prefix", "suffix"), ("begin", "end"),
    ("create", "delete"), ("insert", "delete"), ("attach", "detach"), ("mount", "unmount"),
    ("connect", "disconnect"), ("subscribe", "unsubscribe"), ("merge", "split"), ("zip", "unzip"),
    ("grant", "revoke"), ("login", "logout"), ("lazy", "eager"), ("dark", "light"), ("light", "heavy"),
    ("internal", "external"), ("local", "remote"), ("local", "global"), ("static", "dynamic"),
    ("mutable", "immutable"), ("nullable", "non-nullable"), ("optional", "required"), ("to", "from"),
    ("right", "wrong"), ("correct", "incorrect"), ("good", "bad"), ("best", "worst"), ("safe", "unsafe"),
]
_NEGATIONS = {"not", "no", "never", "without", "none", "nothing", "cannot", "nor"}

# Openings of a short prompt that lean on the previous turn ("yes, go ahead", "try again").
FOLLOW_UPS = (
    "yes", "yeah", "yep", "yup", "no", "nope", "ok", "okay", "sure", "thanks", "thank you",
    "go ahead", "go on", "do it", "do that", "do this", "continue", "keep going", "carry on",
    "proceed", "try again", "again", "retry", "redo", "one more", "same", "do the same", "the same",
    "and the other", "the other", "and now", "now do", "now the", "what about", "how about",
    "and also", "also", "looks good", "lgtm", "sounds good", "perfect", "great", "fix it", "fix that",
    "undo", "revert", "that's wrong", "wrong", "not quite", "that didn't", "it didn't",
)
_FOLLOW_UP_MAX_WORDS = 12


def _forms(word: str) -> set[str]:
    stem = word[:-1] if word.endswith("e") else word
    return {word, word + "s", word + "d", word + "ed", stem + "ed", stem + "ing", word + "ing", word + "es"}


@cache
def _opposite_index() -> dict[str, set[str]]:
    """Each inflected form -> the base words it is opposite to."""
    index: dict[str, set[str]] = {}
    for a, b in _OPPOSITES:
        for base, other in ((a, b), (b, a)):
            for form in _forms(base):
                index.setdefault(form, set()).add(other)
    return index


@cache
def _base_of() -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in _OPPOSITES:
        for base in pair:
            for form in _forms(base):
                out.setdefault(form, base)
    return out


def words(text: str) -> list[str]:
    """The lower-case words of `text`, in order (apostrophes kept: "don't")."""
    return _WORD.findall(text.lower())


def literals(text: str) -> list[str]:
    """The ordered literals of `text` that a matching prompt must repeat exactly."""
    out: list[str] = []
    last = 0
    for m in _QUOTED.finditer(text):
        out.extend(_token_literals(text[last : m.start()]))
        out.append("q:" + next(g for g in m.groups() if g is not None))
        last = m.end()
    out.extend(_token_literals(text[last:]))
    return out


def _token_literals(text: str) -> list[str]:
    out: list[str] = []
    for raw in _TOKEN.findall(text):
        tok = raw.strip(".,:;!?)(-")
        if not tok:
            continue
        low = tok.lower()
        if low in NUMBER_WORDS:
            out.append("n:" + NUMBER_WORDS[low])
        elif _NUMBER.match(tok):
            out.append("n:" + tok.replace(",", "").replace("_", ""))
        elif _FLAG.match(raw.strip(".,:;!?)(")):
            out.append("f:" + raw.strip(".,:;!?)("))
        elif _PATH.search(tok) or _DOTTED.match(tok):
            out.append("p:" + tok)
        elif _SNAKE.match(tok) or _CAMEL.match(tok) or (_ALLCAPS.match(tok) and len(tok) > 1):
            out.append("i:" + tok)
    return out


def eligible(query: str, min_words: int) -> str | None:
    """Why `query` may not be matched semantically, or None when it may."""
    w = words(query)
    if len(w) < min_words:
        return f"the prompt has {len(w)} words (fewer than {min_words})"
    if len(w) <= _FOLLOW_UP_MAX_WORDS:
        joined = " ".join(w[1:] if w[0] == "please" else w)
        for phrase in FOLLOW_UPS:
            if joined == phrase or joined.startswith(phrase + " "):
                return f"a follow-up ({phrase!r})"
    return None


def check_pair(a: str, b: str) -> str | None:
    """Why prompts `a` and `b` must not share an answer although they embed alike, or None."""
    la, lb = literals(a), literals(b)
    if la != lb:
        return f"literals differ ({_show(la)} vs {_show(lb)})"
    wa, wb = words(a), words(b)
    if wa != wb and Counter(wa) == Counter(wb):
        return "the same words in a different order"
    opposite = _opposites(wa, wb)
    if opposite:
        return f"opposite words ({opposite})"
    na, nb = _negated(wa), _negated(wb)
    if na != nb:
        return "one is negated, the other is not"
    return None


def _show(lits: list[str]) -> str:
    return "[" + ", ".join(x.split(":", 1)[1] for x in lits[:6]) + (", ..." if len(lits) > 6 else "") + "]"


def _opposites(wa: list[str], wb: list[str]) -> str | None:
    index, base = _opposite_index(), _base_of()
    sa = {base[w] for w in wa if w in base}
    sb = {base[w] for w in wb if w in base}
    for w in sa - sb:
        for other in index.get(w, ()):
            if other in sb - sa:
                return f"{w}/{other}"
    return None


def _negated(w: list[str]) -> bool:
    count = sum(1 for x in w if x in _NEGATIONS or x.endswith("n't"))
    return count % 2 == 1
