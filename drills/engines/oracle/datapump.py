"""A schema moved to another database with Data Pump, with its writes stopped.

    oracle.freeze_schema   every table of the schema READ ONLY (ALTER TABLE ... READ ONLY), as
                           SYSDBA through SQL*Plus on the source's host; the tables are recorded
    oracle.expdp           expdp SCHEMAS=... into a directory object on the source's host
    oracle.move_dump       the dump file to the target's host, through the two executors
    oracle.impdp           impdp of the dump on the target's host
    oracle.release_schema  the tables drctl froze READ WRITE again (the rollback, and in drill
                           mode the end: the target was a rehearsal)
    sqlplus.schema_frozen   (check) no table of the schema takes writes / every one does

Data Pump logs in as the node's ``user`` with its password: both go in a parameter file written
on the host (mode 0600, in the directory object's path, as the Oracle OS user) and removed as
soon as the tool ends, never on a command line. ``directory`` names the directory object (default
``DATA_PUMP_DIR``) and ``directory_path`` its path on that host, where the dump is found to be
moved. The downtime objective runs from the freeze to the first write on the target
(``oracle.takes_writes``).
"""

from __future__ import annotations

import posixpath
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from drills.engine.catalogue import ActionResult, ActionSpec, CheckSpec, Params, check_spec
from drills.engines.oracle import parsers
from drills.engines.oracle.tools import (
    ENGINE,
    MASK,
    OracleNode,
    ToolFailed,
    describe_sqlplus,
    describe_tool,
    oracle_node,
    run_tool,
    sqlplus,
    tool_failed,
)
from drills.engines.postgres.runstate import load_state, update_state
from drills.engines.postgres.transfer import copy_file, same_place
from drills.executors.oracle import oracle_password
from drills.model import redact
from drills.model.errors import InputError
from verify.result import Observation, Probe

if TYPE_CHECKING:
    from drills.engine.targets import Targets

SCHEMA = r"^[A-Z][A-Z0-9_$#]{0,127}$"
FROZEN_KEY = "oracle_frozen"
DUMP_KEY = "oracle_dump"
COPY_KEY = "oracle_dump_copy"
_TABLES = (
    "SELECT owner, table_name FROM dba_tables WHERE owner = '{schema}' AND temporary = 'N' "
    "AND nested = 'NO' AND secondary = 'N' AND dropped = 'NO' AND read_only = '{ro}'"
)


class SchemaParams(Params):
    schema_: str = Field(alias="schema", pattern=SCHEMA, description="The schema, upper case.")


# -- freeze and release --------------------------------------------------------------------------


def _alter_block(schema: str, to: Literal["READ ONLY", "READ WRITE"], only: list[str]) -> str:
    tag = "drctl-frozen" if to == "READ ONLY" else "drctl-released"
    query = _TABLES.format(schema=schema, ro="NO" if to == "READ ONLY" else "YES")
    if only:
        names = ", ".join("'" + name.replace("'", "''") + "'" for name in only)
        query += f" AND table_name IN ({names})"
    return (
        "BEGIN\n"
        f"  FOR t IN ({query}) LOOP\n"
        f"    EXECUTE IMMEDIATE 'ALTER TABLE \"' || t.owner || '\".\"' || t.table_name || "
        f"'\" {to}';\n"
        f"    DBMS_OUTPUT.PUT_LINE('{tag} ' || t.owner || '.' || t.table_name);\n"
        "  END LOOP;\n"
        "END;\n/"
    )


SETUP = (
    "SET SERVEROUTPUT ON SIZE UNLIMITED",
    "SET FEEDBACK OFF",
    "ALTER SESSION SET ddl_lock_timeout = 30;",
)


def freeze_run(targets: Targets, role: str, params: SchemaParams, timeout: float) -> ActionResult:
    on = oracle_node(targets, role)
    run = sqlplus(on, *SETUP, _alter_block(params.schema_, "READ ONLY", []), timeout=timeout)
    parsed = parsers.parse_sqlplus(run.output)
    frozen = re.findall(r"drctl-frozen (\S+)", run.output)
    # What was frozen is recorded before any error is judged: the rollback must release it.
    previous = load_state(targets.env.name, on.name).get(FROZEN_KEY, {}).get("tables", [])
    tables = sorted(set(previous) | {t.split(".", 1)[1] for t in frozen})
    update_state(
        targets.env.name, on.name, **{FROZEN_KEY: {"schema": params.schema_, "tables": tables}}
    )
    if parsed.errors or run.returncode != 0:
        raise tool_failed(
            run, f"freezing {params.schema_}", parsed.errors, {"frozen": tables, "host": on.name}
        )
    return ActionResult(
        f"{len(frozen)} table(s) of {params.schema_} made READ ONLY on {on.name}",
        {"schema": params.schema_, "frozen": tables, "host": on.name},
    )


def freeze_describe(targets: Targets, role: str, params: SchemaParams) -> list[str]:
    return describe_sqlplus(targets, role, *SETUP, _alter_block(params.schema_, "READ ONLY", []))


def release_run(targets: Targets, role: str, params: SchemaParams, timeout: float) -> ActionResult:
    on = oracle_node(targets, role)
    state = load_state(targets.env.name, on.name).get(FROZEN_KEY)
    if not state or not state.get("tables"):
        return ActionResult(f"drctl froze no table of {params.schema_} on {on.name}", {})
    tables: list[str] = state["tables"]
    run = sqlplus(on, *SETUP, _alter_block(params.schema_, "READ WRITE", tables), timeout=timeout)
    parsed = parsers.parse_sqlplus(run.output)
    if parsed.errors or run.returncode != 0:
        raise tool_failed(run, f"releasing {params.schema_}", parsed.errors, {"tables": tables})
    released = re.findall(r"drctl-released (\S+)", run.output)
    update_state(targets.env.name, on.name, **{FROZEN_KEY: None})
    return ActionResult(
        f"{len(released)} table(s) of {params.schema_} READ WRITE again on {on.name}",
        {"schema": params.schema_, "released": [t.split(".", 1)[1] for t in released]},
    )


def release_describe(targets: Targets, role: str, params: SchemaParams) -> list[str]:
    block = _alter_block(params.schema_, "READ WRITE", ["<the tables drctl froze>"])
    return describe_sqlplus(targets, role, *SETUP, block)


class FrozenParams(Params):
    schema_: str = Field(alias="schema", pattern=SCHEMA)
    frozen: bool = Field(default=True, description="True: no table takes writes; False: all do.")


def schema_frozen(probe: Probe, role: str, params: FrozenParams) -> Observation:
    """The schema's tables are all READ ONLY (frozen: true) or all READ WRITE (DBA_TABLES)."""
    targets: Targets = probe  # type: ignore[assignment]
    on = oracle_node(targets, role)
    ro = "NO" if params.frozen else "YES"
    query = _TABLES.format(schema=params.schema_, ro=ro).replace(
        "SELECT owner, table_name", "SELECT 'drctl-count '||COUNT(*)"
    )
    run = sqlplus(on, "SET HEADING OFF FEEDBACK OFF PAGESIZE 0", f"{query};", timeout=30)
    parsed = parsers.parse_sqlplus(run.output)
    found = re.search(r"drctl-count (\d+)", run.output)
    if found is None or parsed.errors:
        raise tool_failed(run, "counting tables", parsed.errors, {})
    count = int(found.group(1))
    word = "writable" if params.frozen else "read-only"
    return Observation(
        {word: count}, f"0 {word} tables in {params.schema_}", count == 0, f"on {on.name}"
    )


# -- expdp and impdp -----------------------------------------------------------------------------


class DumpParams(SchemaParams):
    directory: str = Field(default="DATA_PUMP_DIR", pattern=SCHEMA)
    directory_path: str = Field(description="The directory object's path on the node's host.")


class ImportParams(DumpParams):
    source: str = Field(description="Role of the database the dump was made on.")
    remap_schema: str | None = Field(default=None, pattern=SCHEMA)
    table_exists_action: Literal["SKIP", "APPEND", "TRUNCATE", "REPLACE"] | None = None
    tolerate: list[str] = Field(
        default_factory=list,
        description="Error codes that do not fail the import (e.g. ORA-31684: the user exists).",
    )


def userid(on: OracleNode) -> str:
    """The parameter file's USERID line (the password read here, registered to be masked)."""
    password = oracle_password(on.access)
    if password is None:
        raise InputError(
            f"node {on.name}: Data Pump logs in with the node's user and password; this node "
            "has none (password_env or password_file)",
            host=on.name,
        )
    if '"' in password or "\n" in password:
        raise InputError(f"node {on.name}: the password holds a quote or a newline", host=on.name)
    redact.register(password)
    connect = on.access.dsn(on.node.host, on.node.port)
    return f'USERID={on.access.user}/"{password}"@{connect}'


def parfile(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def _with_parfile(
    on: OracleNode,
    tool: Literal["expdp", "impdp"],
    directory: str,
    lines: list[str],
    stamp: str,
    timeout: float,
) -> Any:
    path = posixpath.join(directory, f".drctl-{tool}-{stamp}.par")
    real = userid(on)
    on.host.run(
        ["sh", "-c", 'umask 077; cat > "$1"', "sh", path],
        user=on.os_user,
        timeout=30,
        input=parfile([real, *lines]),
    )
    try:
        return run_tool(on, tool, [f"parfile={path}"], "", timeout=timeout)
    finally:
        on.host.run(["rm", "-f", "--", path], user=on.os_user, timeout=30, check=False)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def export_lines(params: DumpParams, dumpfile: str) -> list[str]:
    return [
        f"SCHEMAS={params.schema_}",
        f"DIRECTORY={params.directory}",
        f"DUMPFILE={dumpfile}",
        f"LOGFILE={dumpfile.removesuffix('.dmp')}.export.log",
        "FLASHBACK_TIME=SYSTIMESTAMP",
    ]


def expdp_run(targets: Targets, role: str, params: DumpParams, timeout: float) -> ActionResult:
    on = oracle_node(targets, role)
    stamp = _stamp()
    dumpfile = f"drctl_{params.schema_.lower()}_{stamp}.dmp"
    started = time.monotonic()
    run = _with_parfile(
        on, "expdp", params.directory_path, export_lines(params, dumpfile), stamp, timeout
    )
    log = parsers.parse_datapump_log(run.output)
    data: dict[str, Any] = {"export": log.as_dict(), "host": on.name, "dumpfile": dumpfile}
    if not log.succeeded:
        raise tool_failed(run, f"export of {params.schema_}", log.errors, data)
    path = posixpath.join(params.directory_path, dumpfile)
    size = int(
        on.host.run(["stat", "-c", "%s", "--", path], user=on.os_user, timeout=30).stdout.strip()
    )
    digest = on.host.run(["sha256sum", "--", path], user=on.os_user, timeout=600).stdout.split()[0]
    dump = {
        "path": path,
        "dumpfile": dumpfile,
        "size": size,
        "sha256": digest,
        "schema": params.schema_,
        "rows": {t.table: t.rows for t in log.tables},
    }
    update_state(targets.env.name, on.name, **{DUMP_KEY: dump})
    data.update(dump, seconds=round(time.monotonic() - started, 3))
    return ActionResult(
        f"{len(log.tables)} table(s), {sum(t.rows for t in log.tables)} row(s) exported to "
        f"{path} ({size} bytes)\n{run.excerpt(1200)}",
        data,
    )


def expdp_describe(targets: Targets, role: str, params: DumpParams) -> list[str]:
    on = oracle_node(targets, role)
    shown = shown_userid(on)
    par = posixpath.join(params.directory_path, ".drctl-expdp-<stamp>.par")
    return [
        f"on {on.name}: write {par} (mode 0600, removed after): {shown}; "
        + "; ".join(export_lines(params, f"drctl_{params.schema_.lower()}_<stamp>.dmp")),
        *describe_tool(targets, role, "expdp", [f"parfile={par}"], ""),
    ]


def shown_userid(on: OracleNode) -> str:
    """The USERID line as ``plan`` shows it: no password is read."""
    connect = on.access.dsn(on.node.host, on.node.port)
    return f"USERID={on.access.user}/{MASK}@{connect}"


def move_run(targets: Targets, role: str, params: ImportParams, timeout: float) -> ActionResult:
    source, target = oracle_node(targets, params.source), oracle_node(targets, role)
    dump = load_state(targets.env.name, source.name).get(DUMP_KEY)
    if not dump:
        raise InputError(f"no dump made on {source.name} in this run (oracle.expdp first)")
    destination = posixpath.join(params.directory_path, dump["dumpfile"])
    if same_place(source.host, source.os_user, target.host, target.os_user) and (
        destination == dump["path"]
    ):
        copied: dict[str, Any] = {"copied": False, "path": destination}
    else:
        result = copy_file(
            source.host,
            dump["path"],
            source.os_user,
            target.host,
            destination,
            target.os_user,
            size=dump["size"],
            expected_sha256=dump["sha256"],
            deadline=time.monotonic() + timeout,
        )
        copied = {"copied": True, **result.as_data()}
    update_state(targets.env.name, target.name, **{COPY_KEY: {**dump, "path": destination}})
    return ActionResult(
        f"{dump['dumpfile']} ({dump['size']} bytes) from {source.name} to {target.name}:"
        f"{destination}" + ("" if copied["copied"] else " (same host and user: not copied)"),
        copied,
    )


def move_describe(targets: Targets, role: str, params: ImportParams) -> list[str]:
    source, target = oracle_node(targets, params.source), oracle_node(targets, role)
    return [
        f"copy the dump from {source.name} ({source.host.address}, as {source.os_user}) to "
        f"{target.name}:{params.directory_path} ({target.host.address}, as {target.os_user}) "
        "in base64 chunks through both executors, then check its sha256 there"
    ]


def import_lines(params: ImportParams, dumpfile: str) -> list[str]:
    lines = [
        f"SCHEMAS={params.schema_}",
        f"DIRECTORY={params.directory}",
        f"DUMPFILE={dumpfile}",
        f"LOGFILE={dumpfile.removesuffix('.dmp')}.import.log",
    ]
    if params.remap_schema:
        lines.append(f"REMAP_SCHEMA={params.schema_}:{params.remap_schema}")
    if params.table_exists_action:
        lines.append(f"TABLE_EXISTS_ACTION={params.table_exists_action}")
    return lines


def impdp_run(targets: Targets, role: str, params: ImportParams, timeout: float) -> ActionResult:
    on = oracle_node(targets, role)
    dump = load_state(targets.env.name, on.name).get(COPY_KEY)
    if not dump:
        raise InputError(f"no dump on {on.name} in this run (oracle.move_dump first)")
    stamp = _stamp()
    started = time.monotonic()
    run = _with_parfile(
        on, "impdp", params.directory_path, import_lines(params, dump["dumpfile"]), stamp, timeout
    )
    log = parsers.parse_datapump_log(run.output)
    data: dict[str, Any] = {
        "import": log.as_dict(),
        "host": on.name,
        "seconds": round(time.monotonic() - started, 3),
    }
    tolerated = {c.upper() for c in params.tolerate}
    untolerated = [e for e in log.errors if e.code not in tolerated and e.prefix == "ORA"]
    if log.outcome == "unknown" or log.outcome == "stopped" or untolerated:
        raise tool_failed(
            run, f"import of {params.schema_}", tuple(untolerated) or log.errors, data
        )
    exported: dict[str, int] = dump.get("rows", {})
    imported = {t.table: t.rows for t in log.tables}
    mismatched = {
        table: {"exported": rows, "imported": imported.get(table)}
        for table, rows in exported.items()
        if imported.get(table) != rows
    }
    data["rows"] = {"exported": exported, "imported": imported}
    if mismatched:
        raise ToolFailed(
            f"node {on.name}: impdp loaded other row counts than expdp exported: "
            + ", ".join(f"{t} {v['imported']} of {v['exported']}" for t, v in mismatched.items()),
            host=on.name,
            data=data,
        )
    return ActionResult(
        f"{len(log.tables)} table(s), {sum(imported.values())} row(s) imported on {on.name}"
        f"\n{run.excerpt(1200)}",
        data,
    )


def impdp_describe(targets: Targets, role: str, params: ImportParams) -> list[str]:
    on = oracle_node(targets, role)
    shown = shown_userid(on)
    par = posixpath.join(params.directory_path, ".drctl-impdp-<stamp>.par")
    return [
        f"on {on.name}: write {par} (mode 0600, removed after): {shown}; "
        + "; ".join(import_lines(params, "<the dump file>")),
        *describe_tool(targets, role, "impdp", [f"parfile={par}"], ""),
    ]


def datapump_actions() -> list[ActionSpec]:
    spec = ActionSpec
    return [
        spec(
            "oracle.freeze_schema",
            SchemaParams,
            freeze_run,
            freeze_describe,
            True,
            "Stop writes on a schema: every table READ ONLY (recorded for the release).",
            ENGINE,
        ),
        spec(
            "oracle.release_schema",
            SchemaParams,
            release_run,
            release_describe,
            True,
            "The tables drctl froze READ WRITE again.",
            ENGINE,
        ),
        spec(
            "oracle.expdp",
            DumpParams,
            expdp_run,
            expdp_describe,
            False,
            "expdp of a schema into a directory object on the node's host.",
            ENGINE,
        ),
        spec(
            "oracle.move_dump",
            ImportParams,
            move_run,
            move_describe,
            True,
            "Move the dump to the target's host through the executors (sha256 checked).",
            ENGINE,
        ),
        spec(
            "oracle.impdp",
            ImportParams,
            impdp_run,
            impdp_describe,
            True,
            "impdp of the dump on the target's host; row counts checked against the export.",
            ENGINE,
        ),
    ]


def datapump_checks() -> list[CheckSpec]:
    return [check_spec("sqlplus.schema_frozen", FrozenParams, schema_frozen, ENGINE)]
