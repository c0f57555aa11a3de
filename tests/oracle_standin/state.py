"""The stand-in's world: what each Oracle node is, kept in a JSON file.

Everything that plays a part of Oracle in the tests reads and writes this file, through this
class: the SQL stand-in (``database``), and the command-line stand-ins for dgmgrl and rman that
run on an SSH lab host (``bin/``), which find the file through ``DRCTL_ORACLE_STANDIN_STATE``::

    state = StandinState.create(path, {"his-pri": "his_pri", "his-dr": "his_dr"}, primary="his-pri")
    state.roles()                # {"his-pri": "PRIMARY", "his-dr": "PHYSICAL STANDBY"}
    state.switchover("his-dr")   # the roles swap; nothing is lost
    state.abort("his-dr")        # shutdown abort: connections fail (ORA-12514 / ORA-01034)
    state.failover("his-pri")    # his-pri is primary; his-dr needs reinstatement
    state.startup("his-dr")      # it mounts, still PRIMARY, and may not open (ORA-16649)
    state.reinstate("his-dr")    # a physical standby again, applying

Each change takes an exclusive lock on ``<file>.lock`` and replaces the file whole, so separate
processes may share it. A transition that Oracle would refuse raises ``StandinError`` with the
ORA- code Oracle would give.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

STATE_ENV = "DRCTL_ORACLE_STANDIN_STATE"  # where the CLI stand-ins find the file
PRIMARY = "PRIMARY"
PHYSICAL = "PHYSICAL STANDBY"
SNAPSHOT = "SNAPSHOT STANDBY"
STANDBYS = (PHYSICAL, SNAPSHOT, "LOGICAL STANDBY")


class StandinError(Exception):
    """A transition Oracle would refuse; the message starts with the ORA- code it would give."""


def new_node(
    db_unique_name: str, role: str, release: str = "19c", standalone: bool = False
) -> dict[str, Any]:
    standby = role != PRIMARY
    return {
        "db_unique_name": db_unique_name,
        "standalone": standalone,  # a database of its own, outside the Data Guard configuration
        "database_role": role,
        "open_mode": "MOUNTED" if standby else "READ WRITE",
        "up": True,
        "listener": True,  # the listener answers (the host is reachable)
        "registration": "dynamic",  # dynamic: a down instance's service is gone (ORA-12514)
        "needs_reinstate": False,
        "apply": standby,  # Redo Apply (MRP0) runs
        "transport_lag": None,  # seconds, or None: as the fixture recorded it
        "apply_lag": None,
        "gap": None,  # [thread, low, high]
        "release": release,
        "server_host": None,  # SYS_CONTEXT('USERENV', 'SERVER_HOST'); default: the node's name
        "fields": {},  # V$DATABASE columns set by a test (protection_level, flashback_on...)
        "views": {},  # view -> scenario of its fixture ('absent': ORA-00942)
        "answers": {},  # view -> {columns, rows} set by a test (StandinState.answer)
        "tables": {},  # table -> rows (dicts), as this database has them
        "incarnation": 0,  # bumped at every restart or role change: open sessions are lost
        # SCNs: each committed write on a primary takes the next one, and a standby that
        # receives its redo has applied up to it (V$DATABASE.CURRENT_SCN, V$THREAD)
        "scn": 1000,
        "last_redo_at": None,  # when the node's own last redo was made (V$THREAD)
        "standby_became_primary_scn": 0,  # set by a failover to the node
    }


class StandinState:
    """The stand-in's world in a JSON file (see the module's docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- the file ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        nodes: dict[str, str],
        *,
        primary: str,
        release: str = "19c",
        password: str | None = None,
        standalone: Iterable[str] = (),
    ) -> StandinState:
        """A new world: ``nodes`` maps node names to their DB_UNIQUE_NAME; ``primary`` is
        primary, the others physical standbys, all up and applying, except the ``standalone``
        ones: databases of their own, open read write, outside the Data Guard configuration
        (a migration's source and target). ``password``: the one the databases accept (None:
        any)."""
        state = cls(path)
        alone = set(standalone)
        data = {
            "nodes": {
                name: new_node(
                    unique,
                    PRIMARY if name == primary or name in alone else PHYSICAL,
                    release,
                    standalone=name in alone,
                )
                for name, unique in nodes.items()
            },
            "password": password,
            "events": [],
        }
        state.path.parent.mkdir(parents=True, exist_ok=True)
        with state._locked():
            state._write(data)
        return state

    @classmethod
    def from_env(cls) -> StandinState:
        """The state named by ``DRCTL_ORACLE_STANDIN_STATE`` (for the CLI stand-ins)."""
        path = os.environ.get(STATE_ENV)
        if not path:
            raise StandinError(f"{STATE_ENV} is not set: where is the stand-in's state?")
        return cls(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.path.read_text())
        return data

    def _write(self, data: dict[str, Any]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(temporary, self.path)

    @contextlib.contextmanager
    def change(self, what: str) -> Iterator[dict[str, Any]]:
        """The world to change, written back (with ``what`` in its events) when the block ends
        without an error."""
        with self._locked():
            data = self._read()
            yield data
            data["events"].append({"at": time.time(), "event": what})
            self._write(data)

    def data(self) -> dict[str, Any]:
        """A copy of the whole world, as the file has it now."""
        return self._read()

    # -- reading -------------------------------------------------------------------------------

    def node(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(_node(self._read(), name))

    def names(self) -> list[str]:
        return list(self._read()["nodes"])

    def roles(self) -> dict[str, str]:
        """Each node's DATABASE_ROLE (as V$DATABASE says it, up or not)."""
        return {n: v["database_role"] for n, v in self._read()["nodes"].items()}

    def primary(self) -> str | None:
        """The node that takes writes: PRIMARY, up and open READ WRITE."""
        return _open_primary(self._read())

    def is_up(self, name: str) -> bool:
        return bool(self.node(name)["up"])

    def status(self, name: str) -> str:
        """What the broker would say of the node: 'SUCCESS', 'needs reinstate', 'down',
        'apply off', 'gap'."""
        node = self.node(name)
        if node["needs_reinstate"]:
            return "needs reinstate"
        if not node["up"]:
            return "down"
        if node["database_role"] in STANDBYS and not node["apply"]:
            return "apply off"
        if node["gap"]:
            return "gap"
        return "SUCCESS"

    def password(self) -> str | None:
        value = self._read().get("password")
        return None if value is None else str(value)

    def events(self) -> list[str]:
        return [e["event"] for e in self._read()["events"]]

    def lag(self, name: str) -> dict[str, float | None]:
        node = self.node(name)
        return {"transport": node["transport_lag"], "apply": node["apply_lag"]}

    def gap(self, name: str) -> tuple[int, int, int] | None:
        found = self.node(name)["gap"]
        return None if found is None else (int(found[0]), int(found[1]), int(found[2]))

    def scenario(self, name: str, view: str) -> str:
        return str(self.node(name)["views"].get(view.lower(), "default"))

    def rows(self, name: str, table: str) -> list[dict[str, Any]]:
        return list(self.node(name)["tables"].get(table.lower(), []))

    # -- setting up a test ---------------------------------------------------------------------

    def set(self, name: str, **fields: Any) -> None:
        """Set node fields (up, open_mode, release, listener, registration...) or, for any
        other key, a V$DATABASE column (protection_level='RESYNCHRONIZATION')."""
        with self.change(f"set {name} {sorted(fields)}") as data:
            node = _node(data, name)
            for key, value in fields.items():
                if key in node and key not in ("fields", "views", "tables", "answers"):
                    node[key] = value
                else:
                    node["fields"][key.lower()] = value

    def use(self, name: str, view: str, scenario: str) -> None:
        """Answer ``view`` on the node from the fixture's ``scenario`` ('absent': ORA-00942)."""
        with self.change(f"use {name} {view} {scenario}") as data:
            _node(data, name)["views"][view.lower()] = scenario

    def answer(self, name: str, view: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Answer ``view`` on the node with these rows (a test's own output, e.g. an alert log
        line that quotes a password), instead of a fixture's."""
        with self.change(f"answer {name} {view}") as data:
            _node(data, name)["answers"][view.lower()] = {
                "columns": [c.lower() for c in columns],
                "rows": rows,
            }

    def set_lag(
        self, name: str, *, transport: float | None = None, apply: float | None = None
    ) -> None:
        with self.change(f"lag {name} transport={transport} apply={apply}") as data:
            node = _node(data, name)
            node["transport_lag"], node["apply_lag"] = transport, apply

    def set_gap(self, name: str, low: int, high: int, thread: int = 1) -> None:
        with self.change(f"gap {name} {thread} {low}-{high}") as data:
            _node(data, name)["gap"] = [thread, low, high]

    def clear_gap(self, name: str) -> None:
        with self.change(f"gap {name} resolved") as data:
            _node(data, name)["gap"] = None

    def set_apply(self, name: str, running: bool) -> None:
        """Redo Apply on or off (EDIT DATABASE ... SET STATE='APPLY-ON'/'APPLY-OFF')."""
        with self.change(f"apply {name} {'on' if running else 'off'}") as data:
            node = _node(data, name)
            if running and node["database_role"] not in STANDBYS:
                raise StandinError("ORA-16576: apply runs only on a standby")
            node["apply"] = running

    # -- role transitions ----------------------------------------------------------------------

    def switchover(self, to: str) -> None:
        """SWITCHOVER TO ``to``: the standby becomes primary, the primary its standby; no redo
        is lost (the old primary sends all it has first)."""
        with self.change(f"switchover to {to}") as data:
            new = _node(data, to)
            if new.get("standalone"):
                raise StandinError(f"ORA-16541: database {to} is not in the configuration")
            old_name = _open_primary(data)
            if old_name is None:
                raise StandinError("ORA-16625: cannot reach the primary database")
            if old_name == to:
                raise StandinError(f"ORA-16500: {to} is already the primary database")
            old = data["nodes"][old_name]
            if not new["up"]:
                raise StandinError(f"ORA-16625: cannot reach database {new['db_unique_name']}")
            if new["database_role"] != PHYSICAL or not new["apply"] or new["gap"]:
                raise StandinError(
                    "ORA-16467: switchover target is not synchronized"
                    if new["database_role"] == PHYSICAL
                    else f"ORA-16516: the state of {new['db_unique_name']} is invalid"
                )
            new["tables"] = copy.deepcopy(old["tables"])
            standby_mode = new["open_mode"]
            new.update(database_role=PRIMARY, open_mode="READ WRITE", apply=False)
            new["transport_lag"] = new["apply_lag"] = None
            old.update(database_role=PHYSICAL, open_mode=standby_mode, apply=True)
            for node in (new, old):
                node["incarnation"] += 1

    def failover(self, to: str) -> None:
        """FAILOVER TO ``to``: it becomes primary with what it has received; the old primary
        is left as it was (PRIMARY, up or not) and needs reinstatement before it may rejoin."""
        with self.change(f"failover to {to}") as data:
            new = _node(data, to)
            if new.get("standalone"):
                raise StandinError(f"ORA-16541: database {to} is not in the configuration")
            if new["database_role"] == PRIMARY:
                raise StandinError(f"ORA-16500: {to} is already the primary database")
            if not new["up"]:
                raise StandinError(f"ORA-16625: cannot reach database {new['db_unique_name']}")
            for name, node in data["nodes"].items():
                if name != to and node["database_role"] == PRIMARY and not node.get("standalone"):
                    node["needs_reinstate"] = True
            new.update(database_role=PRIMARY, open_mode="READ WRITE", apply=False, gap=None)
            new["transport_lag"] = new["apply_lag"] = None
            new["incarnation"] += 1
            # the end of the redo it applied, then its own: the old primary's redo after it is
            # lost (as STANDBY_BECAME_PRIMARY_SCN says)
            new["standby_became_primary_scn"] = int(new.get("scn", 1000)) + 1
            new["scn"] = new["standby_became_primary_scn"] + 1

    def reinstate(self, name: str) -> None:
        """REINSTATE DATABASE: flash the failed primary back and make it a physical standby
        of the new primary (it must be up: mounted)."""
        with self.change(f"reinstate {name}") as data:
            node = _node(data, name)
            if not node["needs_reinstate"]:
                raise StandinError(f"ORA-16653: {name} does not need to be reinstated")
            if not node["up"]:
                raise StandinError(f"ORA-16625: cannot reach database {node['db_unique_name']}")
            primary = _open_primary(data)
            if primary is None:
                raise StandinError("ORA-16625: cannot reach the primary database")
            node["tables"] = copy.deepcopy(data["nodes"][primary]["tables"])
            node.update(
                database_role=PHYSICAL, open_mode="MOUNTED", apply=True, needs_reinstate=False
            )
            node["incarnation"] += 1

    def abort(self, name: str) -> None:
        """SHUTDOWN ABORT: the instance is gone; its sessions and its service with it."""
        with self.change(f"shutdown abort {name}") as data:
            node = _node(data, name)
            node["up"] = False
            node["incarnation"] += 1

    def startup(self, name: str) -> None:
        """STARTUP: a primary opens READ WRITE, unless a failover happened without it (then it
        stays MOUNTED: ORA-16649); a standby mounts and, under the broker, applies again."""
        with self.change(f"startup {name}") as data:
            node = _node(data, name)
            node["up"] = True
            node["incarnation"] += 1
            if node["database_role"] == PRIMARY:
                node["open_mode"] = "MOUNTED" if node["needs_reinstate"] else "READ WRITE"
            elif node["database_role"] == PHYSICAL:
                node["open_mode"] = "MOUNTED"

    def convert_to_snapshot(self, name: str) -> None:
        """CONVERT DATABASE TO SNAPSHOT STANDBY: open read write, apply stopped, redo still
        received."""
        with self.change(f"convert {name} to snapshot standby") as data:
            node = _node(data, name)
            if node["database_role"] != PHYSICAL:
                raise StandinError(f"ORA-16831: {name} is not a physical standby")
            node.update(database_role=SNAPSHOT, open_mode="READ WRITE", apply=False)
            node["incarnation"] += 1

    def convert_to_physical(self, name: str) -> None:
        """CONVERT DATABASE TO PHYSICAL STANDBY: the snapshot's changes are discarded."""
        with self.change(f"convert {name} to physical standby") as data:
            node = _node(data, name)
            if node["database_role"] != SNAPSHOT:
                raise StandinError(f"ORA-16831: {name} is not a snapshot standby")
            primary = _open_primary(data)
            if primary is not None:
                node["tables"] = copy.deepcopy(data["nodes"][primary]["tables"])
            node.update(database_role=PHYSICAL, open_mode="MOUNTED", apply=True)
            node["incarnation"] += 1

    # -- data ------------------------------------------------------------------------------------

    def create_table(self, name: str, table: str, *, incarnation: int | None = None) -> None:
        """A table made on the node (and, by redo, on the standbys it ships to)."""
        with self.change(f"create table {table} on {name}") as data:
            _still_open(data, name, incarnation)
            for node in _receivers(data, name):
                node["tables"].setdefault(table.lower(), [])

    def write(
        self,
        name: str,
        table: str,
        row: dict[str, Any],
        *,
        key: str | None = None,
        incarnation: int | None = None,
    ) -> None:
        """A committed row on the node, carried to each standby that receives redo without lag
        (a standby with a transport lag misses it: lost if it fails over). ``key``: a column
        whose equal value replaces the row (a MERGE). ``incarnation``: the one the writing
        session connected to; if the node restarted or changed role since, the session is gone
        and nothing is written (ORA-03113)."""
        with self.change(f"write {table} on {name}") as data:
            _still_open(data, name, incarnation)
            source = _node(data, name)
            source["scn"] = int(source.get("scn", 1000)) + 1
            source["last_redo_at"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            for node in _receivers(data, name):
                node["scn"] = source["scn"]
                rows = node["tables"].setdefault(table.lower(), [])
                if key is not None:
                    rows[:] = [r for r in rows if r.get(key) != row.get(key)]
                rows.append(dict(row))


def _node(data: dict[str, Any], name: str) -> dict[str, Any]:
    try:
        node: dict[str, Any] = data["nodes"][name]
    except KeyError:
        raise StandinError(f"ORA-16541: database {name} is not in the configuration") from None
    return node


def _still_open(data: dict[str, Any], name: str, incarnation: int | None) -> None:
    node = _node(data, name)
    if not node["up"] or (incarnation is not None and node["incarnation"] != incarnation):
        raise StandinError("ORA-03113: end-of-file on communication channel")


def _open_primary(data: dict[str, Any]) -> str | None:
    """The Data Guard configuration's primary that takes writes (standalone nodes aside)."""
    for name, node in data["nodes"].items():
        if node.get("standalone"):
            continue
        if node["database_role"] == PRIMARY and node["up"] and node["open_mode"] == "READ WRITE":
            return str(name)
    return None


def _receivers(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The node, and the standbys its redo reaches now (up, applying or not, no transport lag)."""
    source = _node(data, name)
    found = [source]
    if source["database_role"] != PRIMARY or source.get("standalone"):
        return found  # a snapshot standby's or a standalone database's writes stay on it
    for other, node in data["nodes"].items():
        if other == name or node["database_role"] != PHYSICAL or not node["up"]:
            continue
        if node.get("standalone"):
            continue
        if node["needs_reinstate"] or node["transport_lag"]:
            continue
        found.append(node)
    return found
