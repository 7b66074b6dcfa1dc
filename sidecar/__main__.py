"""`python -m sidecar` is the `claude-sidecar` command."""

from __future__ import annotations

from sidecar.cli import main

main()
