"""The tray icon (`claude-sidecar tray`), a separate process that reads the local control
API; pystray is imported only inside that process."""
