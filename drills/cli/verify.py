"""``drctl verify ...``: questions asked directly, outside a drill. Thin: parse, call, draw."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drills.model.errors import DrillError

verify_app = typer.Typer(
    help="Ask a verification question directly (outside a drill).", no_args_is_help=True
)

console = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

SHOWN_DIFFS = 50  # differences listed in the human output; --json lists them all

TABLES_HELP = "\n\n".join(
    [
        "Compare tables between two databases of the same engine, read-only on both.",
        "Each database counts its rows and sums 64-bit row hashes per primary-key range, both "
        "at once; ranges that differ are split until the differing rows are found, and each is "
        "reported by its key as changed, missing in the target or missing in the source. A table "
        "without a primary key is compared by row count and whole-table checksum.",
        "Which tables: --table (repeatable; schema.table, or table in the first --schema that "
        "has it), or every table of the --schema(s), or with neither every table outside the "
        "system schemas and the drctl schema.",
        "DSNs: PostgreSQL libpq strings ('host=... port=... dbname=... user=...') or "
        "postgresql:// URLs; Oracle (--engine oracle) user/password@host:port/service. Prefer "
        "PGPASSWORD or ~/.pgpass to a password in the DSN; a password is never printed.",
        "Exit codes: 0 the tables are identical; 1 they differ (the differences are listed); "
        "2 bad input or no comparison: a DSN that is invalid or cannot be reached (an "
        "unreachable database is input you gave, so it is 2 as well), a missing table or "
        "schema, columns that differ between the sides, a query that failed.",
    ]
)


@verify_app.command("tables", help=TABLES_HELP)
def verify_tables(
    source: Annotated[str, typer.Option("--source", help="DSN of the reference database.")],
    target: Annotated[str, typer.Option("--target", help="DSN of the database checked.")],
    schema: Annotated[
        list[str] | None, typer.Option("--schema", help="Schema (repeatable).")
    ] = None,
    table: Annotated[list[str] | None, typer.Option("--table", help="Table (repeatable).")] = None,
    engine: Annotated[str, typer.Option(help="postgresql or oracle.")] = "postgresql",
    max_diffs: Annotated[
        int, typer.Option("--max-diffs", min=0, help="Differing rows listed per table.")
    ] = 1000,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    from verify.reconcile import reconcile

    if engine not in ("postgresql", "oracle"):
        _fail(f"--engine must be postgresql or oracle, not {engine!r}", json_out)
    try:
        report = reconcile(
            source,
            target,
            tables=list(table) if table else None,
            schemas=list(schema) if schema else None,
            engine=engine,  # type: ignore[arg-type]
            max_diffs=max_diffs,
        )
    except DrillError as exc:
        _fail(str(exc), json_out)
    if json_out:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        _print_report(report)
    raise typer.Exit(0 if report.identical else 1)


def _fail(message: str, json_out: bool) -> None:
    if json_out:
        print(json.dumps({"identical": None, "error": message}, indent=2, ensure_ascii=False))
    err.print(f"[red]drctl verify tables: {escape(message)}[/]")
    raise typer.Exit(2)


def _print_report(report: Any) -> None:
    console.print(
        f"[bold]tables[/]: {escape(report.source)} → {escape(report.target)} "
        f"({report.engine}, row hash {report.hash_mode})"
    )
    for note in report.notes:
        console.print(f"[yellow]{escape(note)}[/]")
    grid = Table(box=box.SIMPLE_HEAD)
    grid.add_column("table")
    grid.add_column("source rows", justify="right")
    grid.add_column("target rows", justify="right")
    grid.add_column("method")
    grid.add_column("result")
    grid.add_column("time", justify="right")
    for result in report.tables:
        counts = result.counts()
        if result.identical:
            verdict = "[green]identical[/]"
        else:
            found = (
                ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items() if n)
                or "differs"
            )
            verdict = f"[red]{escape(found)}{' (more not listed)' if result.truncated else ''}[/]"
        grid.add_row(
            escape(result.table),
            str(result.source_rows),
            str(result.target_rows),
            result.method,
            verdict,
            f"{result.seconds:.2f}s",
        )
    console.print(grid)
    for result in report.tables:
        if result.note:
            console.print(f"{escape(result.table)}: [dim]{escape(result.note)}[/]")
    shown = 0
    for result in report.tables:
        for diff in result.diffs:
            if shown == SHOWN_DIFFS:
                total = sum(len(r.diffs) for r in report.tables)
                console.print(f"… {total - shown} more differences (use --json for all)")
                break
            label = diff.kind.replace("_", " ")
            console.print(f"  {escape(diff.table)}  {escape(diff.key_text())}  {label}")
            shown += 1
        else:
            continue
        break
    verdict = "[green]identical[/]" if report.identical else "[red]differences found[/]"
    console.print(f"{verdict}: {escape(report.summary())} ({report.seconds:.2f}s)")
