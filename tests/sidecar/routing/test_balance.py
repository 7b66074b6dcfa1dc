"""Weighted orders: random without replacement, and nginx's smooth round-robin."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from sidecar.routing.balance import SmoothRoundRobin, weighted_order


@dataclass
class W:
    weight: float


def test_smooth_round_robin_interleaves_by_weight() -> None:
    rr = SmoothRoundRobin([5, 1, 1])
    firsts = [rr.order()[0] for _ in range(7)]
    assert firsts == [0, 0, 1, 0, 2, 0, 0]
    assert Counter(rr.order()[0] for _ in range(700)) == {0: 500, 1: 100, 2: 100}


def test_smooth_round_robin_lists_every_other_slot_after_the_pick() -> None:
    rr = SmoothRoundRobin([1, 3, 0])
    for _ in range(10):
        order = rr.order()
        assert sorted(order) == [0, 1, 2]
        assert order[0] != 2  # a zero weight is never picked first


def test_weighted_order_first_picks_follow_the_weights() -> None:
    rng = random.Random(7)
    slots = [W(1), W(3), W(0)]
    firsts = Counter(weighted_order(slots, rng)[0] for _ in range(4000))
    assert firsts[2] == 0
    assert 0.70 < firsts[1] / 4000 < 0.80
    order = weighted_order(slots, rng)
    assert sorted(order) == [0, 1, 2] and order[-1] == 2
