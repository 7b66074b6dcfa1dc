"""Whether the sidecar can record what it serves: the journal and the sqlite writers.

Storage is degraded while the journal cannot be appended to or a writer's last attempt to
commit to sqlite failed (a full disk, a read-only file, an I/O error). `pending` counts
the usage rows and audit entries held in memory, not yet committed to sqlite; they are
retried until they are written, and recovered from the journal after a crash.

While storage is degraded, new requests are refused (`[usage] on_storage_failure =
"refuse"`, the default): a gateway that governs spend should not serve what it cannot
record. Requests already in flight finish. With `"serve"`, requests are served and the
records wait in memory (lost if the process dies before the disk recovers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sidecar.ledger.journal import Journal


class _Writer(Protocol):
    @property
    def pending(self) -> int: ...

    error: str | None


class _Failing(Protocol):
    error: str | None


@dataclass
class StorageHealth:
    """The storage state that /healthz, the control API's status and the storage gate read."""

    journal: Journal | None
    writers: list[_Writer]
    refuse: bool = True  # refuse new requests while degraded
    # Stores whose failure is reported but refuses nothing (the response cache: losing an
    # answer costs a later upstream call, not a record).
    others: list[_Failing] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        """What is failing now, or None when every write succeeds. A failed journal is probed
        (one blank line) first, so its recovery shows even while every request is refused."""
        if self.journal is not None and self.journal.error is not None:
            self.journal.sync()
        errors = [self.journal.error] if self.journal is not None and self.journal.error else []
        errors += [w.error for w in self.writers if w.error]
        return "; ".join(errors) if errors else None

    @property
    def ok(self) -> bool:
        """Whether every record can be written."""
        return self.error is None

    @property
    def pending(self) -> int:
        """Records accepted but not yet committed to sqlite."""
        return sum(w.pending for w in self.writers)

    def state(self) -> dict[str, Any]:
        """`{"ok", "pending", "error", "warning"}` for /healthz and the control API."""
        warnings = [o.error for o in self.others if o.error]
        return {"ok": self.ok, "pending": self.pending, "error": self.error, "warning": "; ".join(warnings) or None}
