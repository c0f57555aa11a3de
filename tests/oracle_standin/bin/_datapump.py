"""The Data Pump stand-in behind ``expdp`` and ``impdp``: ``parfile=PATH`` with USERID, SCHEMAS,
DIRECTORY, DUMPFILE, LOGFILE (and REMAP_SCHEMA, TABLE_EXISTS_ACTION for impdp). The dump file is
JSON holding the schema's tables as the node has them; the directory objects' paths are in
``standin.json``.

Output shapes, from tests/fixtures/oracle/: expdp_schema_success_11g.txt,
expdp_schema_with_error_11g.txt, impdp_schema_user_exists_19c.txt, impdp_schema_rows_adb.txt
(the closing "Job ... completed with N error(s)" line, ". . exported/imported" rows, ORA-39151).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from _standin import CONFIG, NODE, STATE, out, record_call, stdin_text


def read_parfile(argv: list[str]) -> dict[str, str]:
    path = next((a.split("=", 1)[1] for a in argv if a.lower().startswith("parfile=")), None)
    if path is None:
        raise SystemExit("UDE-00014: invalid value for parameter, 'parfile'")
    values: dict[str, str] = {"_path": path}
    for line in Path(path).read_text().splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            values[key.strip().upper()] = value.strip()
    return values


def size_text(rows: list[dict[str, Any]]) -> str:
    return f"{max(1, len(json.dumps(rows))) / 1024:.3f} KB"


def banner(kind: str) -> None:
    out(f"{kind}: Release 19.0.0.0.0 - Production on {time.strftime('%a %b %d %H:%M:%S %Y')}")
    out("Version 19.3.0.0.0")
    out("")
    out("Copyright (c) 1982, 2019, Oracle and/or its affiliates.  All rights reserved.")
    out("")


def login(par: dict[str, str]) -> str | None:
    userid = par.get("USERID", "")
    user, _, rest = userid.partition("/")
    password = rest.rsplit("@", 1)[0].strip('"')
    expected = STATE.data().get("password")
    if expected is not None and password != expected:
        out("ORA-01017: invalid username/password; logon denied")
        return None
    out("Connected to: Oracle Database 19c Enterprise Edition Release 19.0.0.0.0 - Production")
    return user.upper()


def main(tool: str) -> int:
    record_call(tool, stdin_text())
    par = read_parfile(sys.argv[1:])
    banner("Export" if tool == "expdp" else "Import")
    owner = login(par)
    if owner is None:
        return 1
    schema = par["SCHEMAS"].upper()
    directory = CONFIG["directories"].get(par["DIRECTORY"].upper())
    if directory is None:
        out("ORA-39002: invalid operation")
        out("ORA-39070: Unable to open the log file.")
        out(f"ORA-39087: directory name {par['DIRECTORY']} is invalid")
        return 1
    dump = Path(directory) / par["DUMPFILE"]
    job = "SYS_EXPORT_SCHEMA_01" if tool == "expdp" else "SYS_IMPORT_SCHEMA_01"
    started = f'"{owner}"."{job}"'
    node = STATE.node(NODE)
    if tool == "expdp":
        tables = {
            t: rows for t, rows in node["tables"].items() if t.startswith(schema.lower() + ".")
        }
        out(f"Starting {started}:  {owner.lower()}/******** parfile={par['_path']}")
        out("Processing object type SCHEMA_EXPORT/TABLE/TABLE_DATA")
        out("Processing object type SCHEMA_EXPORT/TABLE/TABLE")
        for table, rows in sorted(tables.items()):
            name = table.split(".", 1)[1].upper()
            out(
                f'. . exported "{schema}"."{name}"'.ljust(57)
                + f"{size_text(rows):>10}"
                + f"{len(rows):>8} rows"
            )
        dump.write_text(json.dumps({"schema": schema, "from": NODE, "tables": tables}))
        out(f"Master table {started} successfully loaded/unloaded")
        out("*" * 78)
        out(f"Dump file set for {owner}.{job} is:")
        out(f"  {dump}")
        out(f"Job {started} successfully completed at {time.strftime('%H:%M:%S')}")
        return 0
    content = json.loads(dump.read_text())
    target = (par.get("REMAP_SCHEMA", "").split(":")[-1] or schema).upper()
    action = par.get("TABLE_EXISTS_ACTION", "SKIP").upper()
    out(f"Master table {started} successfully loaded/unloaded")
    out(f"Starting {started}:  {owner.lower()}/******** parfile={par['_path']}")
    out("Processing object type SCHEMA_EXPORT/TABLE/TABLE")
    out("Processing object type SCHEMA_EXPORT/TABLE/TABLE_DATA")
    errors = 0
    with STATE.change(f"impdp {schema} on {NODE}") as data:
        tables = data["nodes"][NODE]["tables"]
        for table, rows in sorted(content["tables"].items()):
            name = table.split(".", 1)[1]
            key = f"{target.lower()}.{name}"
            if key in tables and action == "SKIP":
                out(
                    f'ORA-39151: Table "{target}"."{name.upper()}" exists. All dependent '
                    "metadata and data will be skipped due to table_exists_action of skip"
                )
                errors += 1
                continue
            tables[key] = list(rows) if action != "APPEND" else tables.get(key, []) + list(rows)
            out(
                f'. . imported "{target}"."{name.upper()}"'.ljust(57)
                + f"{size_text(rows):>10}"
                + f"{len(rows):>8} rows"
            )
    ended = time.strftime("%a %b %d %H:%M:%S %Y")
    if errors:
        out(f"Job {started} completed with {errors} error(s) at {ended} elapsed 0 00:00:02")
    else:
        out(f"Job {started} successfully completed at {ended} elapsed 0 00:00:02")
    return 0
