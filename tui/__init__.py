"""The Textual dashboard (`claude-sidecar tui`).

It talks to the sidecar only through the local control API (`/sidecar/v1/...`: status,
usage, routes, cache, policy and the event stream), never through the daemon's internals,
so it runs against a local sidecar, a remote one, or a recording.
"""
