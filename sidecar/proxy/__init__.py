"""The daemon's HTTP side: app factory, ingress checks, proxy handlers, control API."""
