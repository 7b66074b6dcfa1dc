"""The request metrics are plain tallies spelled for Prometheus when scraped; the exposition
is what prometheus_client's own Counter and Histogram write for the same observations."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from sidecar.observability.metrics import LATENCY_BUCKETS, Spread, Tally

CREATED = re.compile(rb"^(\S+_created(?:\{[^}]*\})?) \S+$", re.M)
labels = st.tuples(st.sampled_from(["anthropic", "openai", ""]), st.sampled_from(["m1", "m-2", 'q"x\\y\n']))
values = st.one_of(st.sampled_from([*LATENCY_BUCKETS, 0.0, 1e-9, 601.0, 1e6]), st.floats(0, 1000, allow_nan=False))


def scrubbed(text: bytes) -> bytes:
    """The exposition with every `_created` timestamp blanked (they are clock readings)."""
    return CREATED.sub(rb"\1 T", text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(labels, values), max_size=30), st.lists(st.tuples(labels, st.floats(0, 1e6, allow_nan=False)), max_size=10))
def test_tallies_expose_what_prometheus_client_exposes(observed: list[tuple[tuple[str, str], float]], added: list[tuple[tuple[str, str], float]]) -> None:
    ref, ours = CollectorRegistry(), CollectorRegistry()
    h = Histogram("x_seconds", "doc", ("provider", "model"), buckets=LATENCY_BUCKETS, registry=ref)
    c = Counter("x_cost", "doc", ("provider", "model"), registry=ref)
    z = Counter("x_saved", "doc", (), registry=ref)
    spread, tally, zero = Spread("x_seconds", "doc", ("provider", "model"), LATENCY_BUCKETS), Tally("x_cost", "doc", ("provider", "model")), Tally("x_saved", "doc", ())
    for family in (spread, tally, zero):
        ours.register(family)
    for key, v in observed:
        h.labels(*key).observe(v)
        spread.observe(key, v)
    for key, n in added:
        c.labels(*key).inc(n)
        tally.inc(key, n)
        z.inc(n)
        zero.inc((), n)
    assert scrubbed(generate_latest(ours)) == scrubbed(generate_latest(ref))
