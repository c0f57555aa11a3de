"""A stand-in for ``oracledb.connect``: Oracle databases that answer from the state and the
recorded outputs.

``StandinDatabase(state, env).connect`` takes what ``oracledb.connect`` takes (``dsn``, ``user``,
``password``, ``mode``...) and is passed to the real executor (``OracleSession(connect=...)``),
so the executor's connection handling and error translation run as they do against Oracle.

Where a connection lands: an EZConnect ``host:port/service`` or a descriptor's ADDRESS list is
matched to the environment's nodes by host and port; the service must be the node's (its
``oracle.service`` or db_unique_name) or, on the node that is primary now, its
``primary_service``; a node that is down, or a service it does not run, fails the way a
listener does (thin mode's DPY-6005 with DPY-6001 "Similar to ORA-12514", or ORA-01034 when the
service is registered statically). A wrong password is ORA-01017, a plain session on a mounted
database ORA-01033.

What a statement answers: ``SELECT ... FROM <view>`` is answered from ``fixtures/<view>.json``
(the scenario the state names for the node, else ``default``), projected onto the columns or
aliases the statement selects; ``V$DATABASE``, ``V$DATAGUARD_STATS``, ``V$ARCHIVE_GAP`` and the
apply process follow the state (roles, lags, gaps, apply on or off). The WHERE clause is not
evaluated, except ``col = :bind`` on the drctl tables: the checks judge the rows they get. A
view the fixture says is newer than the node's release, or a scenario 'absent', is ORA-00942; a
DBA_ view on a mounted database is ORA-01219.
Writes (INSERT, MERGE, CREATE TABLE in a PL/SQL block) go to the state, on a primary only
(ORA-16000 elsewhere), and reach the standbys that receive redo without lag.
"""

from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path
from typing import Any

import oracledb

from drills.model.environment import Environment
from tests.oracle_standin import recorded
from tests.oracle_standin.state import PHYSICAL, PRIMARY, STANDBYS, StandinError, StandinState

FIXTURES = Path(__file__).parent / "fixtures"
DRCTL_TABLES = ("drctl_canary", "drctl_write_probe", "drctl_heartbeat")


def _release(text: str) -> float:
    """'11.2' -> 11.2, '19c' -> 19.0, '23ai' -> 23.0."""
    found = re.match(r"\s*(\d+)(?:\.(\d+))?", text)
    return float(f"{found.group(1)}.{found.group(2) or 0}") if found else 0.0


@functools.cache
def fixture(view: str) -> dict[str, Any] | None:
    path = FIXTURES / (view.lower().replace("$", "_") + ".json")
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _ora(code: str, text: str, *, lost: bool = False) -> oracledb.Error:
    cls = oracledb.OperationalError if lost else oracledb.DatabaseError
    return cls(f"{code}: {text}")


# -- parsing just enough SQL --------------------------------------------------------------------


def _top_level(text: str, word: str) -> int:
    """Where ``word`` first appears outside parentheses and quotes, or -1."""
    depth, quoted, pattern = 0, False, re.compile(rf"\b{word}\b", re.IGNORECASE)
    for i, c in enumerate(text):
        if c == "'":
            quoted = not quoted
        elif not quoted and c == "(":
            depth += 1
        elif not quoted and c == ")":
            depth -= 1
        elif (
            not quoted
            and depth == 0
            and pattern.match(text, i)
            and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_$#"))
        ):
            return i
    return -1


def _split_commas(text: str) -> list[str]:
    parts, depth, quoted, start = [], 0, False, 0
    for i, c in enumerate(text):
        if c == "'":
            quoted = not quoted
        elif not quoted and c == "(":
            depth += 1
        elif not quoted and c == ")":
            depth -= 1
        elif not quoted and depth == 0 and c == ",":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def select_names(sql: str) -> list[str]:
    """The names of what a SELECT returns: each item's alias, else its column's name."""
    body = sql.strip()
    start = _top_level(body, "SELECT") + len("SELECT")
    end = _top_level(body, "FROM")
    names = []
    for item in _split_commas(body[start:end]):
        alias = re.search(r"\bAS\s+([\w$#\"]+)\s*$", item, re.IGNORECASE)
        if alias:
            names.append(alias.group(1).strip('"').lower())
        elif re.fullmatch(r"[\w$#.]+", item):
            names.append(item.split(".")[-1].lower())
        else:
            last = re.search(r"\s([\w$#]+)\s*$", item)
            names.append(last.group(1).lower() if last else item.lower())
    return names


def from_view(sql: str) -> str:
    found = re.search(r"\bFROM\s+([\w$#.]+)", sql, re.IGNORECASE)
    return found.group(1).lower().split(".")[-1] if found else ""


def _equalities(sql: str) -> list[tuple[str, str]]:
    """``col = :bind`` pairs of a WHERE clause."""
    where = sql[_top_level(sql, "WHERE") :] if _top_level(sql, "WHERE") >= 0 else ""
    return [(c.lower(), b) for c, b in re.findall(r"\b(\w+)\s*=\s*:(\w+)", where)]


def _interval(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"+{days:02d} {hours:02d}:{minutes:02d}:{secs:02d}"


# -- the database ---------------------------------------------------------------------------------


class StandinDatabase:
    """The stand-in's ``connect`` over an environment's Oracle nodes and a ``StandinState``."""

    def __init__(self, state: StandinState, env: Environment) -> None:
        self.state = state
        self.env = env
        self.statements: list[tuple[str, str]] = []  # (node, statement), every one executed
        self.connects: list[dict[str, Any]] = []  # the arguments of every connect, as given

    def _addresses(self, dsn: str) -> tuple[list[tuple[str, int]], str]:
        if dsn.lstrip().startswith("("):
            hosts = re.findall(r"\(HOST=([^)]+)\)\(PORT=(\d+)\)", dsn, re.IGNORECASE)
            service = re.search(r"SERVICE_NAME=([^)]+)\)", dsn, re.IGNORECASE)
            return [(h, int(p)) for h, p in hosts], service.group(1) if service else ""
        found = re.fullmatch(r"(?:tcps?://)?([^:/]+)(?::(\d+))?/([\w.$#]+)", dsn.strip())
        if not found:
            raise _ora("DPY-4000", f'cannot connect to database. Unable to find "{dsn}"')
        return [(found.group(1), int(found.group(2) or 1521))], found.group(3)

    def _node_at(self, host: str, port: int) -> str | None:
        for name, node in self.env.nodes.items():
            if node.oracle is not None and node.host == host and node.port == port:
                return name
        return None

    def connect(self, **arguments: Any) -> StandinConnection:
        """``oracledb.connect`` for the stand-in's nodes (the first address that takes it)."""
        self.connects.append(dict(arguments))
        if arguments.get("password") is None and not arguments.get("externalauth"):
            # python-oracledb's own check, before any network (thin mode logs in with a password)
            raise oracledb.DatabaseError("DPY-4001: no credentials specified")
        addresses, service = self._addresses(str(arguments.get("dsn", "")))
        failure: oracledb.Error | None = None
        for host, port in addresses:
            try:
                return self._connect_to(host, port, service, arguments)
            except oracledb.Error as exc:
                if "ORA-01017" in str(exc) or "ORA-01033" in str(exc):
                    raise
                failure = exc
        raise failure or _ora("DPY-6005", "cannot connect to database", lost=True)

    def _connect_to(
        self, host: str, port: int, service: str, arguments: dict[str, Any]
    ) -> StandinConnection:
        name = self._node_at(host, port)
        if name is None:
            raise oracledb.OperationalError(
                "DPY-6005: cannot connect to database (CONNECTION_ID=standin).\n"
                "[Errno 111] Connection refused"
            )
        node = self.state.node(name)
        access = self.env.nodes[name].oracle
        assert access is not None
        if not node["listener"]:
            raise oracledb.OperationalError(
                "DPY-6005: cannot connect to database (CONNECTION_ID=standin).\n"
                "[Errno 111] Connection refused"
            )
        own = {s.lower() for s in (access.service, node["db_unique_name"]) if s}
        primary_service = (access.primary_service or "").lower()
        is_open_primary = (
            node["up"] and node["database_role"] == PRIMARY and node["open_mode"] == "READ WRITE"
        )
        offered = own | ({primary_service} if primary_service and is_open_primary else set())
        registered = node["up"] or node["registration"] == "static"
        if not registered or service.lower() not in offered:
            raise oracledb.OperationalError(
                "DPY-6005: cannot connect to database (CONNECTION_ID=standin).\n"
                f'DPY-6001: Service "{service}" is not registered with the listener at host '
                f'"{host}" port {port}. (Similar to ORA-12514)'
            )
        if not node["up"]:
            raise oracledb.OperationalError(
                "ORA-01034: ORACLE not available\nORA-27101: shared memory realm does not exist"
            )
        if access.wallet_dir is not None:
            self._wallet(host, port, access.wallet_dir, arguments)
        expected = self.state.password()
        if expected is not None and arguments.get("password") != expected:
            raise oracledb.DatabaseError(
                "ORA-01017: invalid credential or not authorized; logon denied"
            )
        privileged = arguments.get("mode", oracledb.AUTH_MODE_DEFAULT) != oracledb.AUTH_MODE_DEFAULT
        if node["open_mode"] == "MOUNTED" and not privileged:
            raise oracledb.DatabaseError("ORA-01033: ORACLE initialization or shutdown in progress")
        return StandinConnection(self, name, int(node["incarnation"]))

    @staticmethod
    def _wallet(host: str, port: int, wallet_dir: str, arguments: dict[str, Any]) -> None:
        """A node with ``wallet_dir`` stands for a TCPS listener that asks for the client's
        certificate: the connect must name the wallet (``wallet_location``, with its
        ``ewallet.pem``), and an encrypted one needs ``wallet_password``. (The stand-in's own
        wording, in the shape of thin mode's DPY-6005.)"""
        location = arguments.get("wallet_location")
        pem = Path(str(location or "")) / "ewallet.pem"
        if (
            not location
            or Path(str(location)) != Path(wallet_dir).expanduser()
            or not pem.is_file()
        ):
            raise oracledb.OperationalError(
                "DPY-6005: cannot connect to database (CONNECTION_ID=standin).\n"
                f"the listener at {host}:{port} asked for a client certificate and none was "
                "offered (no ewallet.pem in wallet_location)"
            )
        if "ENCRYPTED" in pem.read_text().splitlines()[0] and not arguments.get("wallet_password"):
            raise oracledb.OperationalError(
                "DPY-6005: cannot connect to database (CONNECTION_ID=standin).\n"
                "the wallet's private key is encrypted and no wallet_password was given"
            )


class StandinConnection:
    """What ``oracledb.connect`` returns, as far as the executor uses it."""

    def __init__(self, database: StandinDatabase, node: str, incarnation: int) -> None:
        self.database, self.node, self.incarnation = database, node, incarnation
        self.autocommit = False
        self.call_timeout = 0
        self.outputtypehandler: Any = None
        self.closed = False

    def cursor(self) -> StandinCursor:
        if self.closed:
            raise oracledb.InterfaceError("DPY-1001: not connected to database")
        return StandinCursor(self)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class StandinCursor:
    def __init__(self, conn: StandinConnection) -> None:
        self.conn = conn
        self.arraysize = 100
        self.description: list[tuple[str, ...]] | None = None
        self._rows: list[tuple[Any, ...]] = []

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def execute(self, sql: str, binds: Any = None) -> None:
        database, name = self.conn.database, self.conn.node
        node = database.state.node(name)
        if not node["up"] or node["incarnation"] != self.conn.incarnation:
            raise oracledb.OperationalError(
                "DPY-4011: the database or network closed the connection\n"
                "[Errno 104] Connection reset by peer"
            )
        database.statements.append((name, " ".join(sql.split())))
        values = dict(binds) if isinstance(binds, dict) else {}
        statement = sql.strip()
        head = statement.split(None, 1)[0].upper() if statement else ""
        self.description, self._rows = None, []
        if head in ("SELECT", "WITH"):
            names, rows = Answers(database, name, node, self.conn.incarnation).select(
                statement, values
            )
            self.description = [(n.upper(),) for n in names]
            self._rows = rows
        elif head in ("INSERT", "MERGE"):
            Answers(database, name, node, self.conn.incarnation).write(statement, values)
        elif head in ("BEGIN", "DECLARE"):
            Answers(database, name, node, self.conn.incarnation).block(statement)
        elif head == "ALTER":
            Answers(database, name, node, self.conn.incarnation).alter(statement)
        else:
            raise _ora("ORA-00900", "invalid SQL statement")


class Answers:
    """One statement on one node, answered from the state and the fixtures."""

    def __init__(
        self, database: StandinDatabase, name: str, node: dict[str, Any], incarnation: int
    ) -> None:
        self.database, self.state, self.name, self.node = database, database.state, name, node
        self.incarnation = incarnation

    # -- SELECT ----------------------------------------------------------------------------------

    def select(self, sql: str, binds: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        view = from_view(sql)
        wanted = select_names(sql)
        if view in DRCTL_TABLES:
            rows = self._table(view, sql, binds)
        elif view == "dual":
            rows = [self._identity()]
        else:
            rows = self._view(view)
        missing = [n for n in wanted if rows and n not in rows[0]]
        if missing:
            raise _ora("ORA-00904", f'"{missing[0].upper()}": invalid identifier')
        return wanted, [tuple(row.get(n) for n in wanted) for row in rows]

    def _identity(self) -> dict[str, Any]:
        return {
            "db_unique_name": self.node["db_unique_name"],
            "server_host": self.node["server_host"] or self.name,
        }

    def _table(self, table: str, sql: str, binds: dict[str, Any]) -> list[dict[str, Any]]:
        if table not in self.node["tables"]:
            raise _ora("ORA-00942", "table or view does not exist")
        rows = list(self.node["tables"][table])
        for column, bind in _equalities(sql):
            rows = [r for r in rows if r.get(column) == binds.get(bind)]
        return rows

    def _recorded(self, view: str) -> list[dict[str, Any]]:
        found = fixture(view)
        if found is None:
            raise _ora("ORA-00942", "table or view does not exist")
        if view.startswith("dba_") and self.node["open_mode"] == "MOUNTED":
            raise _ora(
                "ORA-01219",
                "database or pluggable database not open: queries allowed on fixed tables or "
                "views only",
            )
        since = found.get("available_from")
        scenario = self.node["views"].get(view, "default")
        if scenario == "absent" or (since and _release(self.node["release"]) < _release(since)):
            raise _ora("ORA-00942", "table or view does not exist")
        answer = self.node["answers"].get(view)
        spec = found["scenarios"][scenario]
        if answer:
            columns, rows = answer["columns"], answer["rows"]
        elif "recorded" in spec:  # a published output (tests/fixtures/oracle/views/)
            columns, rows = recorded.scenario(spec)
        else:
            columns, rows = found["columns"], spec["rows"]
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def _recorded_scenario(self, view: str) -> bool:
        found = fixture(view) or {}
        scenario = self.node["views"].get(view, "default")
        return "recorded" in found.get("scenarios", {}).get(scenario, {})

    def _view(self, view: str) -> list[dict[str, Any]]:
        node = self.node
        standby = node["database_role"] in STANDBYS
        if view == "v$database":
            live = {
                "database_role": node["database_role"],
                "open_mode": node["open_mode"],
                "switchover_status": self._switchover_status(),
                "db_unique_name": node["db_unique_name"],
                # a mounted database has no current SCN (0), as Oracle's V$DATABASE says
                "current_scn": 0
                if node["open_mode"] == "MOUNTED" and node["database_role"] == PRIMARY
                else int(node.get("scn", 1000)),
                "standby_became_primary_scn": int(node.get("standby_became_primary_scn", 0)),
            }
            if self._recorded_scenario(view):
                # A published output answers as it was printed; what it does not show comes
                # from the state, then from the default scenario.
                shown = self._recorded(view)[0]
                row = self._default_row(view) | live | shown
            else:
                row = self._recorded(view)[0] | live
            row.update(node["fields"])
            return [row]
        if view == "v$dataguard_stats":
            if not standby:
                return []  # no rows on a primary, as documented
            rows = self._recorded(view)
            for row in rows:
                metric = str(row["name"]).lower().replace(" ", "_")
                lag = node.get(metric)
                if metric in ("transport_lag", "apply_lag") and lag is not None:
                    row["value"] = _interval(float(lag))
            return rows
        if view == "v$archive_gap":
            if node["gap"]:
                thread, low, high = node["gap"]
                return [{"thread#": thread, "low_sequence#": low, "high_sequence#": high}]
            return self._recorded(view) if standby else []
        if view in ("v$dataguard_process", "v$managed_standby"):
            rows = self._recorded(view)
            applying = standby and node["apply"] and node["database_role"] == PHYSICAL
            key = "name" if view == "v$dataguard_process" else "process"
            return [r for r in rows if applying or not str(r[key]).startswith("MRP")]
        return self._recorded(view)

    def _default_row(self, view: str) -> dict[str, Any]:
        found = fixture(view)
        assert found is not None
        spec = found["scenarios"]["default"]
        columns, rows = (
            recorded.scenario(spec) if "recorded" in spec else (found["columns"], spec["rows"])
        )
        return dict(zip(columns, rows[0], strict=True))

    def _switchover_status(self) -> str:
        node = self.node
        if node["database_role"] == PRIMARY:
            if node.get("standalone"):
                return "NOT ALLOWED"  # no standby
            others = [
                self.state.node(n)
                for n in self.state.names()
                if n != self.name and self.state.node(n)["database_role"] == PHYSICAL
            ]
            ready = any(o["up"] and o["apply"] and not o["needs_reinstate"] for o in others)
            return "TO STANDBY" if ready and node["open_mode"] == "READ WRITE" else "NOT ALLOWED"
        if node["database_role"] == PHYSICAL:
            return "TO PRIMARY" if node["apply"] and not node["gap"] else "RECOVERY NEEDED"
        return "NOT ALLOWED"

    # -- writes ----------------------------------------------------------------------------------

    def _writable(self) -> None:
        if self.node["open_mode"] != "READ WRITE":
            raise _ora("ORA-16000", "database or pluggable database open for read-only access")

    def write(self, sql: str, binds: dict[str, Any]) -> None:
        self._writable()
        insert = re.match(
            r"\s*INSERT\s+INTO\s+(\w+)\s*\(([^)]*)\)\s*VALUES\s*\(([^)]*)\)", sql, re.IGNORECASE
        )
        merge = re.match(r"\s*MERGE\s+INTO\s+(\w+)", sql, re.IGNORECASE)
        if insert:
            table = insert.group(1).lower()
            columns = [c.strip().lower() for c in insert.group(2).split(",")]
            values = [v.strip() for v in insert.group(3).split(",")]
            row = {
                c: binds.get(v[1:]) if v.startswith(":") else v
                for c, v in zip(columns, values, strict=True)
            }
            key = None
        elif merge:
            table, row, key = merge.group(1).lower(), {"node": binds.get("node")}, "node"
        else:
            raise _ora("ORA-00900", "invalid SQL statement")
        if table not in self.node["tables"]:
            raise _ora("ORA-00942", "table or view does not exist")
        row.setdefault("written_at", time.time())
        try:
            self.state.write(self.name, table, row, key=key, incarnation=self.incarnation)
        except StandinError as exc:  # the session was lost while the statement ran
            raise oracledb.OperationalError(f"DPY-4011: {exc}") from None

    def block(self, sql: str) -> None:
        created = re.search(r"CREATE\s+TABLE\s+(\w+)", sql, re.IGNORECASE)
        if not created:
            raise _ora("ORA-06550", "line 1, column 7: PLS-00201: identifier must be declared")
        self._writable()
        try:
            self.state.create_table(self.name, created.group(1), incarnation=self.incarnation)
        except StandinError as exc:
            raise oracledb.OperationalError(f"DPY-4011: {exc}") from None

    def alter(self, sql: str) -> None:
        text = " ".join(sql.upper().split())
        verify = re.fullmatch(r"ALTER DATABASE SWITCHOVER TO (\w+) VERIFY", text)
        if verify:
            self._verify_switchover(verify.group(1).lower())
        elif text == "ALTER SYSTEM ARCHIVE LOG CURRENT":
            if self.node["database_role"] != PRIMARY or self.node["open_mode"] != "READ WRITE":
                raise _ora("ORA-01109", "database not open")
        else:
            raise _ora("ORA-00940", "invalid ALTER command")

    def _verify_switchover(self, target: str) -> None:
        if self.node["database_role"] != PRIMARY:
            raise _ora("ORA-16476", "the target of a switchover must be a standby database")
        for name in self.state.names():
            other = self.state.node(name)
            if str(other["db_unique_name"]).lower() != target:
                continue
            if not other["up"]:
                raise _ora("ORA-16473", "switchover target is not in sync with the primary")
            if not other["apply"]:
                raise _ora("ORA-16470", "Redo Apply is not running on switchover target")
            if other["gap"] or other["transport_lag"] or other["apply_lag"]:
                raise _ora("ORA-16475", "succeeded with warnings, check alert log for more details")
            return
        raise _ora("ORA-16057", "DGID from server not in Data Guard configuration")
