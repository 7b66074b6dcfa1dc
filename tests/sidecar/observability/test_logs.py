"""logs.configure: rotation in the log dir, JSON lines, and no duplicate when stderr is the log file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.observability.logs import Redactor, configure
from sidecar.observability.settings import ObservabilityConfig
from sidecar.paths import resolve


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """The root and sidecar loggers as they were, restored after the test."""
    root, sc = logging.getLogger(), logging.getLogger("sidecar")
    saved = (root.handlers[:], root.level, sc.level)
    yield root
    for h in root.handlers:
        if h not in saved[0]:
            h.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    sc.setLevel(saved[2])


def test_the_log_file_rotates_and_keeps_the_configured_backups(hermetic_env: Path, root_logging: logging.Logger) -> None:
    p = resolve()
    cfg = ObservabilityConfig(log_max_mb=0.002, log_backups=2, log_format="json")
    handler = configure(cfg, p, Redactor())
    log = logging.getLogger("sidecar.test")
    for i in range(200):
        log.info("line %d %s", i, "x" * 40)
    handler.flush()
    names = sorted(f.name for f in p.log_dir.iterdir())
    assert names == ["sidecar.log", "sidecar.log.1", "sidecar.log.2"]
    assert all(f.stat().st_size <= 0.002 * 1024 * 1024 + 200 for f in p.log_dir.iterdir())
    last = [json.loads(ln) for ln in (p.log_dir / "sidecar.log").read_text().splitlines()]
    assert last[-1]["msg"] == f"line 199 {'x' * 40}" and last[-1]["level"] == "INFO" and last[-1]["logger"] == "sidecar.test"
    assert {f.stat().st_mode & 0o777 for f in p.log_dir.iterdir()} == {0o600}  # rotated ones too


def test_a_stderr_that_is_the_log_file_is_not_written_twice(hermetic_env: Path, root_logging: logging.Logger) -> None:
    p = resolve()
    p.ensure()
    stream = open(p.log_file, "a")  # what a background start hands the daemon as its stderr
    p.log_file.chmod(0o644)
    try:
        root_logging.addHandler(logging.StreamHandler(stream))
        handler = configure(ObservabilityConfig(), p, Redactor())
        logging.getLogger("sidecar.test").warning("only once")
        handler.flush()
        stream.flush()
        assert p.log_file.read_text().count("only once") == 1
        assert p.log_file.stat().st_mode & 0o777 == 0o600
    finally:
        stream.close()
