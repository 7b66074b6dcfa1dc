"""What the sidecar tells operators: Prometheus metrics, OpenTelemetry spans, structured logs."""
