"""The Textual dashboard (`claude-sidecar tui`). It talks to the daemon only through the
local control API (`/sidecar/v1/status`, `/usage`, `/events`), never its internals."""
