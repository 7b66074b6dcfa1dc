"""`audit verify|export`: check the hash-chained audit log, or write it out as JSON lines.

Both read the store directly (read-only), so they work whether or not the daemon runs;
entries the daemon has not written yet (it batches for ~0.2 s) are not seen.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import click
import sqlite_utils

from sidecar.audit.export import write_jsonl
from sidecar.audit.log import HEAD_FILE, read_head
from sidecar.audit.verify import Report, entries_in_db, entries_in_file, verify
from sidecar.cli.common import context
from sidecar.ledger.reports import local_zone
from sidecar.paths import Paths

_DATE = click.DateTime(formats=["%Y-%m-%d", "%Y%m%d"])


@click.group("audit")
def audit() -> None:
    """Verify the hash-chained audit log, or export it as JSON lines."""


@contextlib.contextmanager
def _store(p: Paths) -> Iterator[sqlite_utils.Database]:
    """The store, opened read-only; a clear error when there is none yet."""
    if not p.db_file.exists():
        raise click.ClickException(f"no audit log yet: {p.db_file} does not exist (has the sidecar run?)")
    conn = sqlite3.connect(f"file:{p.db_file}?mode=ro", uri=True)
    try:
        yield sqlite_utils.Database(conn)
    finally:
        conn.close()


@audit.command("verify")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Verify an exported JSONL file instead of the store.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def verify_cmd(file: Path | None, as_json: bool) -> None:
    """Check every entry's hash and link; exit 1 and name the first bad entry if any was
    edited, deleted or moved."""
    if file is not None:
        report = verify(entries_in_file(file), from_start=False)
        source = str(file)
    else:
        _, p = context()
        with _store(p) as db:
            report = verify(entries_in_db(db), read_head(p.data_dir / HEAD_FILE))
        source = str(p.db_file)
    _print(report, source, as_json)
    sys.exit(0 if report.ok else 1)


def _print(report: Report, source: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"source": source, **report.to_dict()}, indent=2))
    elif report.ok:
        last = f", last #{report.last.seq} ({report.last.hash[:12]})" if report.last else ""
        crashes = f"; {report.unclean_shutdowns} unclean shutdown(s) recorded (crashes, not tampering)" if report.unclean_shutdowns else ""
        click.echo(f"ok: {report.entries:,} audit entries verified in {source}{last}{crashes}")
    else:
        click.echo(f"BROKEN at entry #{report.first_bad} of {source}: {report.problem}", err=True)
        click.echo(f"the {report.entries:,} entries before it are intact", err=True)


@audit.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file (default: standard output).")
@click.option("--since", type=_DATE, metavar="YYYY-MM-DD", help="First day to include (local date).")
@click.option("--until", type=_DATE, metavar="YYYY-MM-DD", help="Last day to include (local date).")
def export_cmd(output: Path | None, since: datetime | None, until: datetime | None) -> None:
    """Write the audit log as JSON lines, oldest first (`audit verify --file` checks an
    export, a partial one from its first entry on)."""
    cfg, p = context()
    tz = local_zone(cfg.usage.timezone)
    start = since.replace(tzinfo=tz).timestamp() if since else None
    end = (until + timedelta(days=1)).replace(tzinfo=tz).timestamp() if until else None
    with _store(p) as db:
        if output is None:
            n = write_jsonl(entries_in_db(db), sys.stdout, start, end)
        else:
            with output.open("w", encoding="utf-8") as out:
                n = write_jsonl(entries_in_db(db), out, start, end)
            click.echo(f"wrote {n:,} audit entries to {output}", err=True)


COMMANDS = [audit]
