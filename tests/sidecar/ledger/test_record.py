"""Request ids: ULIDs spelled by a table, equal to the digit-by-digit spelling; unique and time-ordered."""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.ledger import record
from sidecar.ledger.record import new_ulid

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def by_digit(value: int) -> str:
    """The straightforward spelling: 26 Crockford digits, 5 bits at a time."""
    out = []
    for _ in range(26):
        out.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


@settings(max_examples=2000, deadline=None)
@given(st.integers(0, 2**130 - 1) | st.sampled_from([0, 1, 2**128 - 1, 2**130 - 1, 31 << 125]))
def test_the_table_spells_what_the_digits_spell(value: int) -> None:
    assert record.ulid_text(value) == by_digit(value)


def test_ids_are_unique_and_sortable_by_time() -> None:
    ids = [new_ulid(1_700_000_000.0 + i / 1000) for i in range(5000)]
    assert len(set(ids)) == 5000 and ids == sorted(ids)
    assert all(len(i) == 26 and set(i) <= set(CROCKFORD) for i in ids)
    assert by_digit(1_700_000_000_000 << 80)[:10] == ids[0][:10]  # the time is the first 10 digits


def test_a_forked_child_draws_other_random_bits() -> None:
    """The random bytes are drawn ahead in a pool: a forked child must not reuse its parent's."""
    code = (
        "import os, sys; from sidecar.ledger.record import new_ulid\n"
        "new_ulid(1.0)\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(w, new_ulid(1.0).encode()); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "child = os.read(r, 26).decode()\n"
        "sys.stdout.write(child + ' ' + new_ulid(1.0))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ}).stdout
    child, parent = out.split()
    assert child != parent


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 2**48 - 1), st.integers(0, 2**80 - 1), st.integers(0, 2**48 - 1))
def test_an_id_spells_its_time_and_random_bits_as_the_digits_do(ms: int, bits: int, before: int) -> None:
    """new_ulid keeps the time's digits for the millisecond and spells the random bits apart:
    together they must be the 26 digits of the whole 128-bit value, whichever ms came before."""
    original = record._random80
    record._random80 = lambda: bits
    try:
        new_ulid(before / 1000)  # the kept prefix belongs to another millisecond (or this one)
        assert new_ulid(ms / 1000 + 0.0001) == by_digit((ms << 80) | bits)
    finally:
        record._random80 = original
