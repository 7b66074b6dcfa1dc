"""`claude-sidecar usage`: spend and token reports with ccusage-style columns."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

import click

from sidecar import config, paths
from sidecar.ledger.reports import GROUPS, TOKEN_FIELDS, GroupBy, local_zone, report
from sidecar.ledger.store import open_db

_TITLES: dict[GroupBy, tuple[str, str]] = {
    "daily": ("Date", "per day"),
    "weekly": ("Week", "per week (starting Monday)"),
    "monthly": ("Month", "per month"),
    "session": ("Session", "per session"),
    "model": ("Model", "per model"),
    "route": ("Route", "per route"),
}
_NUMBER_HEADERS = ("Requests", "Input", "Output", "Cache Create", "Cache Read", "Total Tokens", "Cost (USD)")


def _parse_date(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    """A calendar date written YYYY-MM-DD or YYYYMMDD; anything else is a usage error (exit 2)."""
    if value is None:
        return None
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise click.BadParameter(
        f"{value!r} is not a date; write it as YYYY-MM-DD or YYYYMMDD (e.g. 2026-05-01)"
    )


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")(f)
    f = click.option(
        "--until",
        metavar="YYYY-MM-DD",
        callback=_parse_date,
        help="Last day to include (local date).",
    )(f)
    f = click.option(
        "--since",
        metavar="YYYY-MM-DD",
        callback=_parse_date,
        help="First day to include (local date).",
    )(f)
    return f


@click.group(invoke_without_command=True)
@_options
@click.option("--by", "by", metavar="ATTRIBUTE",
              help="Claude Code's own telemetry: requests and dollars per attribute of its api_request "
                   "events, e.g. query_source (main, subagent, ...).")  # fmt: skip
@click.pass_context
def usage(ctx: click.Context, since: date | None, until: date | None, as_json: bool, by: str | None) -> None:
    """Spend and token reports; without a subcommand, per day."""
    if by is not None:
        _run_by(by, since, as_json)
    elif ctx.invoked_subcommand is None:
        _run("daily", since, until, as_json)


def _run_by(attribute: str, since: date | None, as_json: bool) -> None:
    """`usage --by ATTRIBUTE`: Claude Code's model requests grouped by one of their attributes."""
    from sidecar.errors import InvalidRequest
    from sidecar.gateway.telemetry import spend_by

    p = paths.resolve()
    tz = local_zone(config.load(p.config_file).usage.timezone)
    start = datetime.combine(since, datetime.min.time(), tzinfo=tz).timestamp() if since else 0.0
    rows: list[dict[str, Any]] = []
    if p.db_file.exists():
        try:
            rows = spend_by(p.db_file, attribute, start)
        except InvalidRequest as e:
            raise click.BadParameter(e.message, param_hint="'--by'") from None
        except sqlite3.DatabaseError as e:
            raise click.ClickException(f"cannot read the usage ledger {p.db_file}: {e}") from None
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no Claude Code telemetry recorded yet (`claude-sidecar run -- claude` sends it)")
        return
    width = max(len(attribute), *(len(str(r["key"])) for r in rows))
    click.echo(f"{attribute:<{width}}  {'Requests':>8}  {'Matched':>7}  {'Input':>12}  {'Output':>10}  {'Cost (USD)':>10}")
    for r in rows:
        key = "(none)" if r["key"] is None else str(r["key"])
        click.echo(f"{key:<{width}}  {r['requests']:>8,}  {r['matched_requests']:>7,}  {r['input_tokens']:>12,}  "
                   f"{r['output_tokens']:>10,}  ${r['cost_usd']:>9,.4f}")  # fmt: skip


def _subcommand(group_by: GroupBy) -> click.Command:
    @click.pass_context
    def command(ctx: click.Context, since: date | None, until: date | None, as_json: bool) -> None:
        # Options given before the subcommand (`usage --json daily`) count too.
        outer = ctx.parent.params if ctx.parent else {}
        _run(
            group_by,
            since or outer.get("since"),
            until or outer.get("until"),
            as_json or bool(outer.get("as_json")),
        )

    command.__doc__ = f"Usage {_TITLES[group_by][1]}."
    return usage.command(name=group_by)(_options(command))


for _group in GROUPS:
    _subcommand(_group)


def _run(group_by: GroupBy, since: date | None, until: date | None, as_json: bool) -> None:
    if since and until and since > until:
        raise click.BadParameter(f"{since} is after --until {until}", param_hint="'--since'")
    p = paths.resolve()
    tz = local_zone(config.load(p.config_file).usage.timezone)
    rows: list[dict[str, Any]] = []
    if p.db_file.exists():
        try:
            db = open_db(p.db_file)
            try:
                rows = report(db, group_by, since, until, tz)
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            raise click.ClickException(f"cannot read the usage ledger {p.db_file}: {e}") from None
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(
            "no usage recorded yet"
            if since is None and until is None
            else "no usage in that period"
        )
    else:
        click.echo(f"Usage {_TITLES[group_by][1]} ({tz})\n")
        click.echo(render_table(group_by, rows))
        counted = sum(int(r.get("count_tokens", 0)) for r in rows)
        if counted:
            click.echo(f"\nplus {counted:,} count_tokens calls (free; not counted as requests)")


def render_table(group_by: GroupBy, rows: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned text table with a Total row."""
    with_models = group_by in ("daily", "weekly", "monthly")
    headers = [_TITLES[group_by][0], *(["Models"] if with_models else []), *_NUMBER_HEADERS]
    body: list[list[list[str]]] = []  # row -> cell -> lines
    for row in rows:
        key = row["key"] if row["key"] is not None else "(none)"
        models = [[f"- {m}" for m in row["models"]] or ["-"]] if with_models else []
        body.append([[str(key)], *models, *([c] for c in _numbers(row))])
    total = {f: sum(r[f] for r in rows) for f in ("requests", *TOKEN_FIELDS, "total_tokens", "cost_usd")}
    footer = [["Total"], *([[""]] if with_models else []), *([c] for c in _numbers(total))]
    widths = [len(h) for h in headers]
    for cells in (*body, footer):
        for i, lines in enumerate(cells):
            widths[i] = max(widths[i], *(len(line) for line in lines))
    first_number = len(headers) - len(_NUMBER_HEADERS)
    rule = "  ".join("-" * w for w in widths)

    def lines_of(cells: list[list[str]]) -> list[str]:
        out = []
        for n in range(max(len(c) for c in cells)):
            parts = []
            for i, lines in enumerate(cells):
                text = lines[n] if n < len(lines) else ""
                parts.append(text.rjust(widths[i]) if i >= first_number else text.ljust(widths[i]))
            out.append("  ".join(parts).rstrip())
        return out

    out = [*lines_of([[h] for h in headers]), rule]
    for cells in body:
        out += lines_of(cells)
    return "\n".join([*out, rule, *lines_of(footer)])


def _numbers(row: dict[str, Any]) -> list[str]:
    tokens = [f"{int(row[f]):,}" for f in ("requests", *TOKEN_FIELDS, "total_tokens")]
    usd = float(row["cost_usd"])
    # Cents hide a session of cheap requests; show sub-cent amounts to 1/100 of a cent.
    return [*tokens, f"${usd:,.4f}" if 0 < usd < 0.01 else f"${usd:,.2f}"]


COMMANDS = [usage]
