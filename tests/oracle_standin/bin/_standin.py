"""What the command-line stand-ins share (installed into a fake $ORACLE_HOME/bin with them).

The stand-ins for ``dgmgrl``, ``rman``, ``sqlplus``, ``expdp`` and ``impdp`` run on an SSH lab
host as the test OS user that plays ``oracle``, exactly where drctl runs the real tools: drctl
finds them at ``$ORACLE_HOME/bin/<tool>`` and gives them the same environment and standard input.
Each reads ``$ORACLE_HOME/standin.json`` (which node this home belongs to, where the shared
``StandinState`` file is, the Data Pump directories) and changes the same world the SQL stand-in
answers from (``tests/oracle_standin/state.py``, copied as ``$ORACLE_HOME/lib/standin_state.py``).

What they print is Oracle's own text in the shapes recorded in ``tests/fixtures/oracle/`` (each
named in the tool's docstring), with the names and numbers of the stand-in's world put in. A few
lines no recorded output showed are marked ``# not from a recorded output`` where they are
printed; nothing parses them.

Their own part of the world (datafiles and corrupt blocks, backups, scratch instances, frozen
tables, whether OS authentication works) is kept in the state file's ``tools`` entry.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

HOME = Path(os.environ.get("ORACLE_HOME") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(HOME / "lib"))

from standin_state import StandinError, StandinState  # noqa: E402

CONFIG: dict[str, Any] = json.loads((HOME / "standin.json").read_text())
NODE: str = CONFIG["node"]
SID: str = os.environ.get("ORACLE_SID", "")
STATE = StandinState(CONFIG["state"])
DBID = 2718281828


def now() -> str:
    return time.strftime("%d-%b-%y").upper()


def clock() -> str:
    return time.strftime("%H:%M:%S")


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def tools(data: dict[str, Any]) -> dict[str, Any]:
    """The stand-ins' own part of the world in the state's data (made on first use)."""
    found: dict[str, Any] = data.setdefault("tools", {})
    found.setdefault("os_auth", {})
    found.setdefault("datafiles", {})
    found.setdefault("corrupt", {})
    found.setdefault("scratch", {})
    found.setdefault("frozen", {})
    found.setdefault("calls", [])
    return found


def record_call(tool: str, stdin: str) -> None:
    """Every call, with its standard input (passwords masked) and environment, for the tests."""
    shown = re.sub(r'/"[^"]*"', '/"********"', stdin)
    with STATE.change(f"{tool} on {NODE}") as data:
        tools(data)["calls"].append(
            {
                "tool": tool,
                "node": NODE,
                "sid": SID,
                "argv": sys.argv[1:],
                "stdin": shown,
                "env": {k: os.environ.get(k) for k in ("ORACLE_HOME", "ORACLE_SID", "NLS_LANG")},
                "user": os.environ.get("USER") or os.environ.get("LOGNAME"),
            }
        )


def node_of_unique(data: dict[str, Any], unique: str) -> str | None:
    for name, node in data["nodes"].items():
        if str(node["db_unique_name"]).lower() == unique.strip("'\"").lower():
            return str(name)
    return None


def os_auth_ok(data: dict[str, Any]) -> bool:
    return bool(tools(data)["os_auth"].get(NODE, True))


def scratch_key(sid: str | None = None) -> str:
    return f"{NODE}/{(sid or SID).upper()}"


def is_scratch(data: dict[str, Any]) -> bool:
    """Whether ORACLE_SID names a scratch instance on this host rather than the node's own."""
    own = str(CONFIG.get("sid", "")).upper()
    return bool(SID) and SID.upper() != own


def datafiles(data: dict[str, Any], node: str) -> list[dict[str, Any]]:
    """The node's datafiles (made on first use): file#, name, blocks examined."""
    found = tools(data)["datafiles"]
    if node not in found:
        base = f"/u01/app/oracle/oradata/{node.upper().replace('-', '_')}"
        found[node] = [
            {"file": 1, "name": f"{base}/system01.dbf", "blocks": 117760},
            {"file": 3, "name": f"{base}/sysaux01.dbf", "blocks": 75529},
            {"file": 4, "name": f"{base}/undotbs01.dbf", "blocks": 44800},
            {"file": 7, "name": f"{base}/users01.dbf", "blocks": 640},
        ]
    result: list[dict[str, Any]] = found[node]
    return result


def format_lag(seconds: float | None) -> str:
    """As the broker prints a lag: '0 seconds', '37 minutes 56 seconds'."""
    total = int(seconds or 0)
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if total >= size:
            count, total = divmod(total, size)
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    if total or not parts:
        parts.append(f"{total} second{'s' if total != 1 else ''}")
    return " ".join(parts)


def stdin_text() -> str:
    return sys.stdin.read() if not sys.stdin.isatty() else ""


__all__ = ["DBID", "NODE", "SID", "STATE", "StandinError", "StandinState"]
