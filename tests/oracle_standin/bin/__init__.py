"""Installing the command-line stand-ins into a fake ORACLE_HOME on a lab host (tests only).

    home = install_home(root / "his-pri-home", node="his-pri", sid="HIS", state=state,
                        directories={"DATA_PUMP_DIR": "/tmp/.../dp-pri"}, owner="drctl-ssh-t")
    write_backup(state, "his-pri", backup_dir, owner="drctl-ssh-t")   # a "nightly backup"

The home holds ``bin/`` (``dgmgrl``, ``rman``, ``sqlplus``, ``expdp``, ``impdp`` and the modules
they share), ``lib/standin_state.py`` (a copy of ``tests/oracle_standin/state.py``, so the test
OS user needs no access to the repository) and ``standin.json`` (which node, where the state is).
Everything is owned by ``owner``, the OS user that plays ``oracle``; the state file and its
directory must be writable by it too (``share_state``).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import time
from pathlib import Path
from typing import Any

from tests.oracle_standin.state import StandinState

HERE = Path(__file__).resolve().parent
TOOLS = ("dgmgrl", "rman", "sqlplus", "expdp", "impdp")
MODULES = ("_standin.py", "_datapump.py")
DBID = 2718281828


def _chown_tree(path: Path, owner: str | None) -> None:
    if owner is None or os.geteuid() != 0:
        return
    entry = pwd.getpwnam(owner)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def install_home(
    home: Path,
    *,
    node: str,
    sid: str,
    state: StandinState,
    directories: dict[str, str] | None = None,
    owner: str | None = None,
    tools: tuple[str, ...] = TOOLS,
) -> Path:
    """A fake ORACLE_HOME for ``node`` with the stand-ins in ``bin`` (only ``tools`` of them:
    leave one out to test a missing tool)."""
    (home / "bin").mkdir(parents=True, exist_ok=True)
    (home / "lib").mkdir(exist_ok=True)
    for tool in tools:
        shutil.copy2(HERE / tool, home / "bin" / tool)
        (home / "bin" / tool).chmod(0o755)
    for module in MODULES:
        shutil.copy2(HERE / module, home / "bin" / module)
    shutil.copy2(HERE.parent / "state.py", home / "lib" / "standin_state.py")
    config = {
        "node": node,
        "sid": sid,
        "state": str(state.path),
        "directories": {k.upper(): v for k, v in (directories or {}).items()},
    }
    (home / "standin.json").write_text(json.dumps(config, indent=1))
    for path in (directories or {}).values():
        Path(path).mkdir(parents=True, exist_ok=True)
        _chown_tree(Path(path), owner)
    home.chmod(0o755)
    _chown_tree(home, owner)
    return home


def share_state(state: StandinState, owner: str | None) -> None:
    """Let the stand-ins' OS user read and replace the state file (and its lock)."""
    directory = state.path.parent
    directory.chmod(0o777)
    lock = state.path.with_name(state.path.name + ".lock")
    lock.touch()
    for path in (state.path, lock):
        path.chmod(0o666)
    _chown_tree(directory, owner)


def write_backup(
    state: StandinState,
    node: str,
    directory: Path,
    *,
    owner: str | None = None,
    scn: int = 4474200,
    at: float | None = None,
) -> Path:
    """A backup of the node's tables as they are now, in ``directory`` (a control file
    autobackup named as RMAN's %F names it, and a backup piece); also listed as the node's own
    backups, for ``RESTORE DATABASE PREVIEW`` and ``VALIDATE`` on it."""
    directory.mkdir(parents=True, exist_ok=True)
    when = time.time() if at is None else at
    day = time.strftime("%Y%m%d", time.gmtime(when))
    tag = time.strftime("TAG%Y%m%dT%H%M%S", time.gmtime(when))
    piece = directory / f"o1_mf_nnndf_{tag}_drctl_.bkp"
    tables = state.node(node)["tables"]
    content: dict[str, Any] = {
        "db_name": "HIS",
        "scn": scn,
        "tag": tag,
        "piece": str(piece),
        "completed": time.strftime("%d.%m.%Y %H:%M:%S", time.gmtime(when)),
        "tables": tables,
    }
    autobackup = directory / f"c-{DBID}-{day}-00"
    piece.write_text(json.dumps({"tables": tables}))
    autobackup.write_text(json.dumps(content))
    os.utime(autobackup, (when, when))
    _chown_tree(directory, owner)
    with state.change(f"backup of {node}") as data:
        found = data.setdefault("tools", {}).setdefault("backups", {}).setdefault(node, [])
        found.append(
            {
                "key": 200 + len(found),
                "completed": content["completed"],
                "tag": tag,
                "piece": str(piece),
                "scn": scn,
            }
        )
    return autobackup


def tools_state(state: StandinState) -> dict[str, Any]:
    """The stand-ins' own part of the world (calls made, frozen tables, scratch instances)."""
    data: dict[str, Any] = state.data().get("tools", {})
    return data


def set_tools(state: StandinState, key: str, node: str, value: Any) -> None:
    """E.g. ``set_tools(state, "os_auth", "his-pri", False)`` or corrupt blocks."""
    with state.change(f"tools {key} {node}") as data:
        data.setdefault("tools", {}).setdefault(key, {})[node] = value
