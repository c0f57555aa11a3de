"""``drctl report``, ``drctl records status`` and ``drctl records trend``: what the sealed records
say, as a drill's report, the freshness of every playbook's drills, and one playbook's trend.

Registered by :func:`register_reports` (after :func:`~drills.cli.records.register_records`, so
``records status`` and ``records trend`` come after the other ``records`` commands, as before).

Exit codes: 0 done; 1 ``status --check`` found something stale; 2 bad input (no such record,
file or option).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from drills.cli.records import (
    _date,
    _print,
    _store,
    console,
    err,
    fits,
    narrow_table,
    records_app,
)
from drills.home import subdir
from drills.model.errors import InputError


def register_reports(app: typer.Typer) -> None:
    records_app.command("status")(records_status)
    records_app.command("trend")(records_trend)
    app.command("report")(report)


# -- status / trend ------------------------------------------------------------------------------


def records_status(
    json_out: Annotated[bool, typer.Option("--json")] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if anything is stale.")] = False,
    today: Annotated[
        str | None, typer.Option(help="Judge as of this date (YYYY-MM-DD); default today.")
    ] = None,
) -> None:
    """Per playbook and environment: the last passing drill and its age, whether the playbook
    changed since, whether the next long public holiday is covered. Stale entries are flagged."""
    from drills.ops.freshness import freshness
    from drills.reports.site import load_site_config

    site = load_site_config()
    entries = freshness(
        _store().list(),
        site.get("freshness") or {},
        today=_date(today, "--today"),
        timezone=str(site.get("timezone") or "Asia/Shanghai"),
    )
    stale = [e for e in entries if e.stale]
    if json_out:
        print(json.dumps([e.as_dict() for e in entries], indent=2, ensure_ascii=False))
    else:
        # Readable at 80 columns, and a record id is never cut: the id sits under its drill in
        # a column as wide as the longest id; the rest wraps. Too narrow even for that, each
        # entry is printed as lines of its own.
        ids = [e.last_pass_id for e in entries if e.last_pass_id]
        table = narrow_table()
        table.add_column(
            "playbook @ environment\nlast passing record",
            no_wrap=True,
            min_width=max((len(i) for i in ids), default=0),
        )
        table.add_column("passed\nage", no_wrap=True)
        table.add_column("state, playbook now, next long holiday", ratio=1, min_width=20)
        rows = []
        for e in entries:
            state = "[red]STALE[/] " + escape("; ".join(e.reasons)) if e.stale else "[green]ok[/]"
            holiday = e.holiday if len(e.holiday) <= 60 else e.holiday[:57] + "…"
            rows.append(
                (
                    escape(f"{e.playbook} @ {e.environment}")
                    + "\n"
                    + (escape(e.last_pass_id) if e.last_pass_id else "[red]none[/]"),
                    f"{e.last_pass_date}\n{e.age_days}d" if e.last_pass_id else "—",
                    f"{state}\nplaybook {escape(e.playbook_note or '—')}\n"
                    f"holiday: {escape(holiday)}",
                )
            )
            table.add_row(*rows[-1])
        if fits(table, wrapping=True):
            console.print(table)
        else:
            for first, second, third in rows:
                console.print(first, no_wrap=True, crop=False)
                console.print("  " + second.replace("\n", ", "))
                console.print("  " + third.replace("\n", "\n  "), soft_wrap=False)
        for text in sorted({e.holiday for e in entries if len(e.holiday) > 60}):
            console.print(escape(f"holiday: {text}"), soft_wrap=False)  # wrapped at the width
        if not entries:
            console.print("no drill records yet")
        console.print(f"{len(stale)} stale of {len(entries)}")
    if check and stale:
        raise typer.Exit(1)


def records_trend(
    playbook: Annotated[str, typer.Argument(help="Playbook name.")],
    env: Annotated[str | None, typer.Option("--env", help="Only this environment.")] = None,
    last: Annotated[int, typer.Option("--last", help="The last N drills.")] = 20,
    fmt: Annotated[str, typer.Option("--format", help="text, html or md.")] = "text",
    lang: Annotated[str | None, typer.Option("--lang", help="zh or en.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write html/md here.")] = None,
) -> None:
    """Per-step durations and the RTO across drills of one playbook (a chart in the HTML)."""
    from drills.model.durations import format_seconds
    from drills.reports import render_trend
    from drills.reports.trend import trend_rows

    records = [
        r
        for r in _store().list()
        if r.playbook.get("name") == playbook
        and r.status != "running"
        and (env is None or r.environment.get("name") == env)
    ]
    records = sorted(records, key=lambda r: r.started_at)[-last:] if last > 0 else records
    if not records:
        raise InputError(
            f"no drill records of playbook {playbook!r}" + (f" on {env}" if env else "")
        )
    if fmt == "text":
        step_ids, rows = trend_rows(records)
        table = Table(box=box.SIMPLE_HEAD, title=f"{playbook}: step durations and RTO")
        for column in ("started (UTC)", "env", "status", *step_ids, "RTO"):
            table.add_column(escape(column), justify="right" if column in step_ids else "left")
        for row in rows:
            table.add_row(
                row.started_at[:19],
                escape(row.environment),
                row.status,
                *[format_seconds(row.steps.get(s)) for s in step_ids],
                format_seconds(row.rto),
            )
        console.print(table)
        return
    data = render_trend(playbook, records, fmt=fmt, lang=lang)
    path = out or subdir("reports") / f"trend-{playbook}.{fmt}"
    path.write_bytes(data)
    _print(f"trend: {path}")


# -- report ------------------------------------------------------------------------------------


def report(
    record_id: Annotated[str, typer.Argument(metavar="ID", help="Drill record id or prefix.")],
    fmt: Annotated[str, typer.Option("--format", help="html, md or pdf.")] = "html",
    lang: Annotated[
        str | None, typer.Option("--lang", help="zh (the site's default) or en.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where to write it ('-' for stdout; default: DRCTL_HOME/reports)."
        ),
    ] = None,
) -> None:
    """Render a drill's report from its sealed record: the drill-record form, a timeline, the
    objectives, problems and rectification, the standard clauses and a signature block."""
    from drills.reports import FORMATS, cjk_font_problem, render_report
    from drills.reports.site import load_site_config

    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    site = load_site_config()
    lang = lang or str(site.get("language") or "zh")
    sealed = _store().sealed(record_id)
    if fmt == "pdf":
        problem = cjk_font_problem()
        if problem:
            err.print(f"[yellow]note: {escape(problem)}[/]")
    data = render_report(sealed, fmt=fmt, lang=lang, site=site)
    if out is not None and str(out) == "-":
        if fmt == "pdf":
            raise InputError("a PDF is not written to stdout: give --out FILE")
        sys.stdout.write(data.decode("utf-8"))
        return
    path = out or subdir("reports") / f"{sealed.record.id}.{lang}.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    _print(f"report: {path}")
