"""Routing: route matching, weighted balancing, fallbacks, retries, circuit breaking, affinity."""
