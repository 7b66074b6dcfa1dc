"""The `[observability]` config section: metrics, tracing and logs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.configread import Reader

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ObservabilityConfig:
    """Metrics, traces and logs of the daemon."""

    metrics: bool = True  # GET /metrics (Prometheus text; needs the local token)
    otlp_endpoint: str | None = None  # OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces
    service_name: str = "claude-sidecar"  # the OpenTelemetry resource's service.name
    log_format: str = "text"  # text | json (one object a line)
    log_level: str = "info"  # debug | info | warning | error (--debug means debug)
    log_max_mb: float = 10.0  # the log file rotates at this size
    log_backups: int = 5  # rotated files kept


def read_observability(r: Reader, data: Any) -> ObservabilityConfig:
    """Validate `[observability]` with the config reader `r` (errors name the key and line)."""
    d = r.table(data, "observability", set(ObservabilityConfig.__dataclass_fields__))
    c = ObservabilityConfig()
    fmt = r.get(d, "observability", "log_format", str, c.log_format)
    if fmt not in LOG_FORMATS:
        raise r.fail("observability.log_format", f"{fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    level = r.get(d, "observability", "log_level", str, c.log_level)
    if level not in LOG_LEVELS:
        raise r.fail("observability.log_level", f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
    endpoint = r.get(d, "observability", "otlp_endpoint", str, None) or None
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise r.fail("observability.otlp_endpoint", f"{endpoint!r} must be an http(s) URL (OTLP over HTTP)")
    max_mb = r.get(d, "observability", "log_max_mb", (int, float), c.log_max_mb)
    if max_mb <= 0:
        raise r.fail("observability.log_max_mb", "must be a positive number")
    backups = r.get(d, "observability", "log_backups", int, c.log_backups)
    if backups < 1:
        raise r.fail("observability.log_backups", "must be at least 1")
    return ObservabilityConfig(
        metrics=r.get(d, "observability", "metrics", bool, c.metrics),
        otlp_endpoint=endpoint,
        service_name=r.get(d, "observability", "service_name", str, c.service_name),
        log_format=fmt,
        log_level=level,
        log_max_mb=float(max_mb),
        log_backups=backups,
    )
