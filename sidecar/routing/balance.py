"""Weighted choice among a route's slots (a target with one of its keys).

- `weighted`: weighted random; independent picks, no shared state to contend on.
- `round_robin`: smooth weighted round-robin (nginx): deterministic, evenly interleaved
  (weights 5,1,1 give a a b a c a a, never a run of five).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol


class Weighted(Protocol):
    """Anything with a weight."""

    weight: float


def weighted_order(slots: Sequence[Weighted], rng: random.Random) -> list[int]:
    """Indexes of `slots` in a weighted random order without replacement (zero weights last)."""
    if len(slots) == 1:
        return [0]  # the usual route: one target, nothing to draw
    idx = [i for i, s in enumerate(slots) if s.weight > 0]
    # Efraimidis-Spirakis: key u^(1/w), largest first, is a weighted sample without replacement.
    keyed = sorted(idx, key=lambda i: rng.random() ** (1.0 / slots[i].weight), reverse=True)
    return keyed + [i for i, s in enumerate(slots) if s.weight <= 0]


class SmoothRoundRobin:
    """nginx's smooth weighted round-robin over a fixed list of weights."""

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = list(weights)
        self.current = [0.0] * len(self.weights)
        self.total = sum(w for w in self.weights if w > 0)

    def order(self) -> list[int]:
        """The next pick first, then the others by weight (the fallback order within the route)."""
        if self.total <= 0:
            return list(range(len(self.weights)))
        for i, w in enumerate(self.weights):
            if w > 0:
                self.current[i] += w
        best = max((i for i, w in enumerate(self.weights) if w > 0), key=lambda i: self.current[i])
        self.current[best] -= self.total
        rest = sorted((i for i in range(len(self.weights)) if i != best), key=lambda i: -self.weights[i])
        return [best, *rest]
