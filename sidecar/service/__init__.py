"""Per-user service definitions (systemd --user, launchd, Task Scheduler): render, write, register.

The templates live in `sidecar/service/templates/` (shipped in the wheel, so an installed
sidecar can render them); `installers/install.sh` installs the package and then runs
`claude-sidecar service install`.
"""
