"""The daemon's log: ISO-8601 UTC timestamps, text or JSON lines, rotation in the log dir,
and a redaction pass that every line goes through, at every level.

Redaction has two halves. Exact values the daemon knows are secret (the local token, the
provider keys it resolved) are replaced wherever they appear; and every secret detector of
the guardrails (sidecar.policy.detectors: cloud and provider keys, tokens, private keys,
passwords in URLs), plus the custom and personal-data ones the config turns on, runs over
the message, the traceback and the stack of each record, before it is formatted and again
over the formatted line. Whatever a bug logs, the line that reaches a file is redacted.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sidecar.config import Config
from sidecar.observability.settings import ObservabilityConfig
from sidecar.paths import Paths
from sidecar.policy.config import GuardrailsConfig
from sidecar.policy.detectors import SECRETS, Detector
from sidecar.policy.guardrails import rules_for

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "[REDACTED]"
MIN_SECRET = 8  # shorter "secrets" would redact ordinary words
STDERR_ENV = "CLAUDE_SIDECAR_LOG_STDERR"  # "0": log to the file only (launchd keeps stderr for crashes)


class UTCFormatter(logging.Formatter):
    """Log lines stamped in ISO-8601 UTC with milliseconds: 2026-12-06T11:04:29.123Z."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time as ISO-8601 UTC."""
        t = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


class JSONFormatter(UTCFormatter):
    """One JSON object a line: ts, level, logger, msg, and exc when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        out = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False)


class Redactor:
    """Replaces known secret values and detector matches with a mask."""

    def __init__(self, detectors: Iterable[Detector] = SECRETS) -> None:
        self.detectors = tuple(detectors)
        self.values: set[str] = set()

    def add(self, *values: str | None) -> None:
        """Secrets known by value (the local token, provider keys)."""
        for v in values:
            if v and len(v) >= MIN_SECRET:
                self.values.add(v)

    def __call__(self, text: str) -> str:
        """`text` with every secret masked."""
        for v in self.values:
            if v in text:
                text = text.replace(v, MASK)
        spans: list[tuple[int, int]] = []
        for d in self.detectors:
            spans.extend(d.find(text))
        if not spans:
            return text
        out, at = [], 0
        for start, end in sorted(spans):
            if end <= at:
                continue
            out.append(text[at:max(start, at)])
            out.append(MASK)
            at = end
        out.append(text[at:])
        return "".join(out)


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter: the record's message, traceback and stack are redacted before it
    formats them, and the finished line once more."""

    def __init__(self, inner: logging.Formatter, redact: Redactor) -> None:
        super().__init__()
        self.inner = inner
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        """The redacted line; `record` itself is left as it was for other handlers."""
        clean = logging.makeLogRecord(record.__dict__)
        try:
            clean.msg, clean.args = self.redact(record.getMessage()), None
        except Exception:  # a bad format string: say so instead of losing the line
            clean.msg, clean.args = self.redact(f"{record.msg!r} (unformattable: {record.args!r})"), None
        if record.exc_info:
            clean.exc_text = self.redact(record.exc_text or self.inner.formatException(record.exc_info))
            clean.exc_info = None
        elif record.exc_text:
            clean.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            clean.stack_info = self.redact(record.stack_info)
        return self.redact(self.inner.format(clean))


def redactor_for(guardrails: GuardrailsConfig, secrets: Iterable[str | None] = ()) -> Redactor:
    """Every secret detector, plus what the guardrails config turns on (PII, custom), plus `secrets`."""
    extra = [r.detector for r in rules_for(guardrails) if r.detector.kind != "secret"]
    r = Redactor((*SECRETS, *extra))
    r.add(*secrets)
    return r


def _same_file(stream: object, path: Path) -> bool:
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        st, target = os.fstat(fd), path.stat()
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose every file is created private to the user (0600)."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def configure(cfg: ObservabilityConfig, paths: Paths, redact: Redactor, debug: bool = False) -> logging.Handler:
    """Set up the daemon's logging: level, format, redaction, and the rotating file in the log
    dir. Standard error keeps a copy unless it already is that file (a background start) or
    CLAUDE_SIDECAR_LOG_STDERR=0 says not to. Returns the file handler."""
    paths.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    inner: logging.Formatter = JSONFormatter() if cfg.log_format == "json" else UTCFormatter(LOG_FORMAT)
    formatter = RedactingFormatter(inner, redact)
    root = logging.getLogger()
    for h in list(root.handlers):
        stream = getattr(h, "stream", None)
        if stream is not None and (_same_file(stream, paths.log_file) or os.environ.get(STDERR_ENV) == "0"):
            root.removeHandler(h)  # the file handler below writes there already
        else:
            h.setFormatter(formatter)
    file_handler = PrivateRotatingFileHandler(
        paths.log_file, maxBytes=int(cfg.log_max_mb * 1024 * 1024), backupCount=cfg.log_backups, encoding="utf-8"
    )
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    if os.name == "posix":  # a background start opened it for its stderr with the default mode
        os.chmod(paths.log_file, 0o600)
    level = logging.DEBUG if debug else getattr(logging, cfg.log_level.upper())
    logging.getLogger("sidecar").setLevel(level)
    if debug:
        root.setLevel(logging.DEBUG)
    return file_handler


def known_secrets(cfg: Config, paths: Paths) -> list[str]:
    """The values to mask by value: the local token and every provider key the config resolves
    (a key that cannot be resolved now is left to the daemon's own start-up error)."""
    from sidecar.daemon_state import load_or_create_token
    from sidecar.errors import SidecarError
    from sidecar.secrets import SecretStore, resolve_keys

    out = [load_or_create_token(paths)]
    store = SecretStore(paths.config_dir / "credentials.json")
    for prov in cfg.providers:
        try:
            out.extend(k.value for k in resolve_keys(prov, store))
        except SidecarError:
            continue
    return out
