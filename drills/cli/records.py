"""``drctl records`` and ``drctl keys``: the record store from the command line.

``drctl report``, ``drctl records status`` and ``drctl records trend`` are in
:mod:`drills.cli.reports` (registered by its ``register_reports``, after ``register_records``).

Exit codes: 0 done (and, for ``verify``, everything verified); 1 a verification failed (or, for
``status --check``, something is stale); 2 bad input (no such record, file or option).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drills.home import subdir
from drills.model.errors import InputError

records_app = typer.Typer(
    help="Drill records: sealed, verifiable, exportable.", no_args_is_help=True
)
keys_app = typer.Typer(help="The site's record-signing key (Ed25519).", no_args_is_help=True)

console = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def register_records(app: typer.Typer) -> None:
    app.add_typer(records_app, name="records")
    app.add_typer(keys_app, name="keys")


def _store() -> Any:
    from drills.records.store import RecordStore

    return RecordStore(subdir("records"), subdir("locks"))


def _print(text: str) -> None:
    console.print(escape(text), highlight=False)


def name_journal_problems(store: Any) -> None:
    """Say on stderr which journals are damaged (path and what is wrong) and which moved to a
    fallback place; the command goes on with the rest."""
    for reading in store.journal_problems():
        err.print(f"[yellow]note: {escape(reading.describe())}[/]", highlight=False)
    moved = store.moved_journals()
    if moved:
        err.print(
            f"[yellow]note: {len(moved)} journal(s) are in a fallback place (the records "
            f"directory could not take them): "
            f"{escape(', '.join(str(p) for p in list(moved.values())[:5]))}; "
            "`drctl records seal --pending` brings them back and seals them[/]",
            highlight=False,
        )


# -- list / show ---------------------------------------------------------------------------------


def summary(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "status": record.status,
        "mode": record.mode,
        "playbook": record.playbook["name"],
        "environment": record.environment["name"],
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "objectives_met": all(o.met for o in record.objectives),
    }


@records_app.command("list")
def records_list(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every run, newest first (finished runs are sealed as they are listed)."""
    from drills.cli.console import styled
    from drills.model.durations import format_seconds

    store = _store()
    records, _ = store.listing()  # the journals left out are among those named here
    name_journal_problems(store)
    if json_out:
        print(json.dumps([summary(r) for r in records], indent=2, ensure_ascii=False))
        return
    # A record id is never cut: the id column is as wide as the longest id, and where the
    # terminal is too narrow for the whole table each id gets a line of its own.
    rows = [
        (
            escape(r.id),
            styled(r.status),
            r.mode,
            format_seconds(r.duration_seconds),
            f"{sum(o.met for o in r.objectives)}/{len(r.objectives)}",
        )
        for r in records
    ]
    table = narrow_table()
    table.add_column("id", no_wrap=True, min_width=max((len(r.id) for r in records), default=2))
    for column in ("status", "mode", "took", "met"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    if fits(table):
        console.print(table)
        return
    console.print("id\n    status  mode  took  met")
    for rid, *rest in rows:
        console.print(rid, no_wrap=True, crop=False)
        console.print("    " + "  ".join(rest))


def narrow_table(**options: Any) -> Table:
    """A table with no outer edge and collapsed padding: readable at 80 columns."""
    return Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, **options
    )


def fits(table: Table, *, wrapping: bool = False) -> bool:
    """Whether the table fits the terminal without cutting a no-wrap column: on one line per
    row, or (``wrapping``) with its wrapping columns wrapped."""
    measured = console.measure(table, options=console.options.update_width(10_000))
    return (measured.minimum if wrapping else measured.maximum) <= console.width


@records_app.command("show")
def records_show(
    record_id: Annotated[str, typer.Argument(metavar="ID", help="Record id (or a unique prefix).")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One record in full, and where it is sealed."""
    from drills.cli.console import print_record

    store = _store()
    record = store.load(record_id)
    if json_out:
        print(record.to_json())
    else:
        print_record(console, record, store.describe(record.id))


# -- verify / export ---------------------------------------------------------------------------


def _keys(public_key: list[Path] | None) -> Any:
    from drills.records.signing import read_public_keys

    return read_public_keys(public_key) if public_key else None


def _print_verdict(verdict: Any, what: str, keys_from: str) -> None:
    if verdict.ok:
        _print(
            f"OK: {what}: {verdict.entries} record(s) in the chain, {verdict.bodies} checked in "
            f"full ({verdict.evidence} piece(s) of evidence); every hash, link and signature holds"
        )
    else:
        err.print(f"[red]FAIL {escape(str(verdict.failures[0]))}[/]", highlight=False)
        for finding in verdict.failures[1:20]:
            err.print(f"  also: {escape(str(finding))}", highlight=False)
        if len(verdict.failures) > 20:
            err.print(f"  … {len(verdict.failures) - 20} more")
    _print(f"chain head: seq {verdict.head_seq}, sha256 {verdict.head_hash}")
    keys = ", ".join(sorted(verdict.key_ids)) or "none"
    _print(f"signatures checked with key(s) {keys} ({keys_from})")
    for warning in verdict.warnings:
        err.print(f"[yellow]note: {escape(warning)}[/]", highlight=False)


@records_app.command("verify")
def records_verify(
    record_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="One drill record (its place in the chain)")
    ] = None,
    all_records: Annotated[bool, typer.Option("--all", help="Every record (the default).")] = False,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="An exported bundle directory (offline).")
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option("--public-key", help="A public key you trust (PEM); may be repeated."),
    ] = None,
) -> None:
    """Check the hash chain and the signatures; name the first bad record; exit 1 if any fails."""
    given = (record_id is not None) + (bundle is not None) + all_records
    if given > 1:
        raise InputError("give one of ID, --all or --bundle DIR")
    keys = _keys(public_key)
    keys_from = "given with --public-key" if keys else "the site's keys directory"
    if bundle is not None:
        from drills.reports.export import verify_bundle

        verdict = verify_bundle(bundle, keys)
        if keys is None:
            keys_from = "shipped in the bundle"
        _print_verdict(verdict, f"bundle {bundle}", keys_from)
    else:
        store = _store()
        verdict = store.verify(keys, only=record_id)
        if record_id is None:
            name_journal_problems(store)
            pending = store.unsealed()
            if pending:
                console.print(
                    f"[yellow]{len(pending)} run(s) not sealed yet (journals only): "
                    f"{', '.join(pending[:5])}; `drctl records seal --pending` seals them[/]"
                )
        what = f"record {record_id}" if record_id else f"store {store.location}"
        _print_verdict(verdict, what, keys_from)
    if not verdict.ok:
        raise typer.Exit(1)


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InputError(f"{option} {value!r}: write a date as YYYY-MM-DD") from exc


@records_app.command("seal")
def records_seal(
    record_id: Annotated[str | None, typer.Argument(help="Run id (or unique prefix).")] = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="Seal every finished run not sealed yet.")
    ] = False,
) -> None:
    """Seal the record of a run that died (interrupted) into the store. Reading never seals."""
    store = _store()
    if (record_id is None) == (not pending):
        raise InputError("give a run ID or --pending (one of them)")
    if record_id is not None:
        record = store.seal(record_id)
        console.print(f"sealed {record.id} ({record.status}) into {store.location}")
        return
    from drills.model.errors import RefusedError
    from drills.records.store import StoreUnavailable

    try:
        done = store.seal_pending()
    except StoreUnavailable as exc:
        moved = store.moved_journals()
        where = (
            f"; journals in a fallback place: {', '.join(str(p) for p in moved.values())}"
            if moved
            else ""
        )
        raise RefusedError(
            f"nothing was sealed: {exc}; the runs stay in their journals{where}"
        ) from exc
    for run_id in done:
        console.print(f"sealed {run_id}")
    console.print(f"{len(done)} record(s) sealed into {store.location}")


@records_app.command("export")
def records_export(
    out: Annotated[Path, typer.Option("--out", help="A new directory for the bundle.")],
    record_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="One drill record.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Every drill started on or after DATE (UTC).")
    ] = None,
    no_reports: Annotated[
        bool, typer.Option("--no-reports", help="Leave out the HTML reports.")
    ] = False,
) -> None:
    """Write a bundle an auditor can verify offline: records, evidence, public key, README."""
    from drills.reports.export import export_bundle

    result = export_bundle(
        _store(), out, record_id=record_id, since=_date(since, "--since"), reports=not no_reports
    )
    _print(
        f"exported {len(result.drills)} drill record(s) and {len(result.annotations)} "
        f"annotation(s) to {result.directory} ({result.files} files)"
    )
    for warning in result.warnings:
        err.print(f"[yellow]note: {escape(warning)}[/]")
    _print(f"verify it with: drctl records verify --bundle {result.directory} --public-key FILE")


# -- annotate ----------------------------------------------------------------------------------


@records_app.command("annotate")
def records_annotate(
    record_id: Annotated[str, typer.Argument(metavar="ID", help="The drill record.")],
    from_file: Annotated[
        Path | None,
        typer.Option("--file", help="YAML with any of the fields below (participants, ...)."),
    ] = None,
    participant: Annotated[
        list[str] | None,
        typer.Option("--participant", help="NAME:ROLE[:ORGANISATION]; may be repeated."),
    ] = None,
    problem: Annotated[
        list[str] | None, typer.Option("--problem", help="A problem found; may be repeated.")
    ] = None,
    rectify: Annotated[
        list[str] | None,
        typer.Option("--rectify", help="'ACTION;OWNER;YYYY-MM-DD'; may be repeated."),
    ] = None,
    plan_revised: Annotated[
        bool | None,
        typer.Option("--plan-revised/--plan-not-revised", help="Must the plan be revised?"),
    ] = None,
    plan_note: Annotated[
        str | None, typer.Option("--plan-note", help="What in the plan is revised.")
    ] = None,
    planned_start: Annotated[
        str | None, typer.Option(help="Planned start, e.g. 2026-11-27T09:00+08:00.")
    ] = None,
    planned_end: Annotated[str | None, typer.Option(help="Planned end.")] = None,
    scenario: Annotated[str | None, typer.Option(help="The scenario, in words.")] = None,
    drill_type: Annotated[
        str | None, typer.Option(help="桌面推演 / 实操演练 / 演示演练 (GB/T 38645).")
    ] = None,
    system: Annotated[str | None, typer.Option(help="The system's name.")] = None,
    consistency: Annotated[
        str | None, typer.Option("--consistency", help="Data-consistency check done by people.")
    ] = None,
    attach: Annotated[
        list[Path] | None, typer.Option("--attach", help="A file of evidence; may be repeated.")
    ] = None,
    note: Annotated[str, typer.Option(help="A note (e.g. what this corrects).")] = "",
    by: Annotated[str | None, typer.Option("--by", help="Who annotates (default: you).")] = None,
) -> None:
    """Add participants, problems, rectification and the plan-revision flag, as a new signed
    record that refers to the drill. A later annotation's field replaces an earlier one's."""
    import getpass

    import yaml

    from drills.records.annotation import (
        Attachment,
        build_annotation,
        input_from,
        parse_participant,
        parse_rectification,
    )
    from drills.records.chain import sha256

    data: dict[str, Any] = {}
    if from_file is not None:
        try:
            loaded = yaml.safe_load(from_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{from_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise InputError(f"{from_file}: expected a mapping of fields")
        data.update(loaded)
    if participant:
        data["participants"] = [parse_participant(p) for p in participant]
    if problem:
        data["problems"] = list(problem)
    if rectify:
        data["rectification"] = [parse_rectification(r) for r in rectify]
    options = {
        "plan_revised": plan_revised,
        "plan_revision_note": plan_note,
        "planned_start": planned_start,
        "planned_end": planned_end,
        "scenario": scenario,
        "drill_type": drill_type,
        "system": system,
        "data_consistency": consistency,
    }
    data.update({k: v for k, v in options.items() if v is not None})
    if note:
        data["note"] = note
    given = input_from(data, str(from_file) if from_file else "annotate")
    files: list[tuple[str, bytes]] = []
    attachments = []
    for path in attach or []:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise InputError(f"--attach {path}: {exc}") from exc
        name = path.name
        if any(n == name for n, _ in files):
            raise InputError(f"--attach: two files are named {name}")
        files.append((name, content))
        attachments.append(Attachment(name=name, sha256=sha256(content), size=len(content)))
    store = _store()
    sealed = store.sealed(record_id)
    annotation = build_annotation(
        sealed.record.id, given, by=by or getpass.getuser(), attachments=attachments
    )
    entry = store.annotate(annotation, files)
    _print(
        f"annotated {sealed.record.id}: sealed {annotation.id} as seq {entry.seq} "
        f"({', '.join(annotation.given()) or 'note'})"
    )


# -- keys --------------------------------------------------------------------------------------


@keys_app.command("init")
def keys_init(
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Retire the current key and make a new one.")
    ] = False,
) -> None:
    """Make the site's Ed25519 key that signs every sealed record."""
    from drills.records.signing import PUBLIC_FILE, init_keys, keys_dir

    key, message = init_keys(rotate=rotate)
    if message:
        _print(message)
    _print(f"signing key: {key.path} (keep it private; mode 0600)")
    _print(f"public key:  {keys_dir() / PUBLIC_FILE} (give it to auditors)")
    _print(f"key id:      {key.key_id}")


@keys_app.command("show")
def keys_show() -> None:
    """The site's public key(s) and their ids, to hand to auditors."""
    from drills.records.signing import keys_dir, site_public_keys

    keys = site_public_keys()
    if not keys:
        raise InputError(f"no public key in {keys_dir()}: run `drctl keys init`")
    for key_id, key in keys.items():
        _print(f"key id {key_id}: {key.source}")
        print(key.pem.decode("ascii"), end="")


# -- reports for demo --------------------------------------------------------------------------

# Kept here (the commands are in drills.cli.reports): `drctl demo` in drills.cli.app imports it
# from this module.


def write_reports(record_ids: list[str], fmt: str = "html") -> list[Path]:
    """The site-language report of each record, in ``$DRCTL_HOME/reports`` (for ``demo``)."""
    from drills.reports import render_report
    from drills.reports.site import load_site_config

    site = load_site_config()
    lang = str(site.get("language") or "zh")
    store = _store()
    paths = []
    for record_id in record_ids:
        path = subdir("reports") / f"{record_id}.{lang}.{fmt}"
        path.write_bytes(render_report(store.sealed(record_id), fmt=fmt, lang=lang, site=site))
        paths.append(path)
    return paths
