"""The semantic tier's decision and its in-memory index.

`decide` is the whole rule for "may this stored answer serve that prompt": both prompts
eligible, cosine at or above the threshold, and every literal guard passed. The stage and
`bench/cache_precision.py` use this one function, so the benchmark measures what ships.

`SemanticIndex` keeps one small matrix of unit vectors per bucket (the prefix key plus the
client's context of the last turn), so a search is a matrix-vector product over the few
entries that share the conversation, never over the whole cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sidecar.cache.embedder import Vector
from sidecar.cache.guards import check_pair, eligible, words
from sidecar.cache.replay import answer_text


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate may serve, and why (or why not)."""

    hit: bool
    reason: str


def decide(query: str, candidate: str, similarity: float, threshold: float, min_words: int) -> Verdict:
    """The semantic decision for one pair of final prompts and their cosine similarity."""
    for text in (query, candidate):
        why = eligible(text, min_words)
        if why is not None:
            return Verdict(False, why)
    if similarity < threshold:
        return Verdict(False, f"similarity {similarity:.3f} is below {threshold:.3f}")
    why = check_pair(query, candidate)
    if why is not None:
        return Verdict(False, why)
    return Verdict(True, f"similarity {similarity:.3f}")


@dataclass(frozen=True)
class Candidate:
    """A stored prompt near the one looked up."""

    key: str  # the entry's exact key
    query: str
    similarity: float


@dataclass
class _Bucket:
    keys: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    rows: list[Vector] = field(default_factory=list)
    matrix: npt.NDArray[np.float32] | None = None


class SemanticIndex:
    """Unit vectors of stored prompts, grouped by bucket key."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._where: dict[str, str] = {}  # entry key -> bucket key

    def __len__(self) -> int:
        return len(self._where)

    def has(self, bucket: str) -> bool:
        """Whether any entry shares `bucket`."""
        return bucket in self._buckets

    def add(self, bucket: str, key: str, query: str, vector: Vector) -> None:
        """Index entry `key` (replacing an older vector of the same key)."""
        self.remove(key)
        b = self._buckets.setdefault(bucket, _Bucket())
        b.keys.append(key)
        b.queries.append(query)
        b.rows.append(np.asarray(vector, dtype=np.float32))
        b.matrix = None
        self._where[key] = bucket

    def remove(self, key: str) -> None:
        """Forget entry `key` (nothing happens when it is not indexed)."""
        bucket = self._where.pop(key, None)
        if bucket is None:
            return
        b = self._buckets[bucket]
        i = b.keys.index(key)
        del b.keys[i], b.queries[i], b.rows[i]
        b.matrix = None
        if not b.keys:
            del self._buckets[bucket]

    def clear(self) -> None:
        """Forget everything."""
        self._buckets.clear()
        self._where.clear()

    def search(self, bucket: str, vector: Vector, k: int = 5) -> list[Candidate]:
        """The `k` entries of `bucket` most similar to `vector`, most similar first."""
        b = self._buckets.get(bucket)
        if b is None:
            return []
        if b.matrix is None:
            b.matrix = np.vstack(b.rows)
        sims = b.matrix @ np.asarray(vector, dtype=np.float32)
        order = np.argsort(-sims)[:k]
        return [Candidate(b.keys[i], b.queries[i], float(sims[i])) for i in order]


def agreement(a: dict[str, Any], b: dict[str, Any]) -> float:
    """How far two answers agree, 0..1 (shadow mode's cheap check of a would-be hit).

    Tool calls must be the same calls with the same inputs (1 or 0); text is compared by
    the overlap of its words.
    """
    calls_a = [(x.get("name"), x.get("input")) for x in a.get("content") or [] if x.get("type") == "tool_use"]
    calls_b = [(x.get("name"), x.get("input")) for x in b.get("content") or [] if x.get("type") == "tool_use"]
    if calls_a or calls_b:
        return 1.0 if calls_a == calls_b else 0.0
    wa, wb = set(words(answer_text(a))), set(words(answer_text(b)))
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)
