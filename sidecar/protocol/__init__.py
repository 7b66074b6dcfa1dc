"""Wire formats the sidecar reads and writes."""
