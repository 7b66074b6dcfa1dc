"""Fakes and factories shared by the tests and the benchmarks (fake upstreams on loopback)."""
