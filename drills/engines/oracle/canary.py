"""The Oracle engine's writers: the canary writer and the write probe.

Both follow the primary the way an application does: through one connect descriptor that lists
every writer node's address (host and port, in the environment's order) with ``FAILOVER=ON``, and
names a role-based service (``oracle.primary_service``) that runs only on the primary (a Clusterware
service with ``-role PRIMARY``, or one started by a startup trigger when the role is PRIMARY). The
listeners of the other nodes do not offer it, so the connection lands on whichever node is
primary now, before and after a switchover or failover.

Which node took a write: after each connection the writer asks the database it reached
``SYS_CONTEXT('USERENV', 'DB_UNIQUE_NAME')`` and ``SERVER_HOST``. The DB_UNIQUE_NAME is matched
against the nodes' ``oracle.db_unique_name`` (it is unique in a Data Guard configuration, and so
names the node, and through it its host and port); without one, SERVER_HOST is matched against
the nodes' ``host`` (the name, or its first label). A node that cannot be told is ``?``.

The tables are ``drctl_canary`` and ``drctl_write_probe`` (``run_id, seq, written_at``), made in
the connecting user's schema on the primary if missing; Data Guard carries them to the standbys.
The writers connect as ``oracle.user`` without ``privilege`` (a plain session on the open
primary). What the logs mean is decided in ``drills.engine.measures``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from drills.engine.measures import Write, WriterLog
from drills.executors.oracle import Connect, OracleSession, connect_arguments
from drills.model.clock import Clock
from drills.model.environment import Environment, OracleAccess
from drills.model.errors import ConnectionFailed, DrillError, InputError

TABLES = ("drctl_canary", "drctl_write_probe")
CREATE_TABLE = (
    "BEGIN EXECUTE IMMEDIATE 'CREATE TABLE {table} (run_id VARCHAR2(200) NOT NULL,"
    " seq NUMBER(19) NOT NULL, written_at TIMESTAMP WITH TIME ZONE DEFAULT SYSTIMESTAMP NOT NULL,"
    " CONSTRAINT {table}_pk PRIMARY KEY (run_id, seq))';"
    " EXCEPTION WHEN OTHERS THEN IF SQLCODE != -955 THEN RAISE; END IF; END;"
)  # ORA-00955: the table exists
IDENTITY_SQL = (
    "SELECT SYS_CONTEXT('USERENV', 'DB_UNIQUE_NAME') AS db_unique_name,"
    " SYS_CONTEXT('USERENV', 'SERVER_HOST') AS server_host FROM dual"
)


class WriterSession(Protocol):
    """What a writer needs of a session (``drills.executors.oracle.OracleSession``)."""

    def query(
        self, sql: str, params: Any = None, *, timeout: float = 10.0
    ) -> list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


Opener = Callable[[], WriterSession]  # a new session on the node that runs the primary service


def writer_nodes(env: Environment, node_names: Sequence[str]) -> list[tuple[str, OracleAccess]]:
    found = [(n, env.nodes[n].oracle) for n in node_names if env.nodes[n].oracle is not None]
    if not found:
        raise ConnectionFailed("no Oracle nodes to write to")
    return [(name, access) for name, access in found if access is not None]


def writer_descriptor(env: Environment, node_names: Sequence[str]) -> str:
    """The connect descriptor over every writer node's address, to the primary-only service."""
    nodes = writer_nodes(env, node_names)
    services = {a.primary_service for _, a in nodes if a.primary_service}
    if not services:
        raise InputError(
            "the Oracle canary writer needs oracle.primary_service: a role-based service that "
            f"runs only on the primary (nodes {', '.join(n for n, _ in nodes)})"
        )
    if len(services) > 1:
        raise InputError(f"the nodes name different primary_service values: {sorted(services)}")
    protocol = "TCPS" if any(a.wallet_dir for _, a in nodes) else "TCP"
    addresses = "".join(
        f"(ADDRESS=(PROTOCOL={protocol})(HOST={env.nodes[n].host})(PORT={env.nodes[n].port}))"
        for n, _ in nodes
    )
    return (
        "(DESCRIPTION=(CONNECT_TIMEOUT=3)(TRANSPORT_CONNECT_TIMEOUT=1)(RETRY_COUNT=0)"
        f"(FAILOVER=ON)(LOAD_BALANCE=OFF)(ADDRESS_LIST={addresses})"
        f"(CONNECT_DATA=(SERVICE_NAME={services.pop()})))"
    )


def live_opener(env: Environment, node_names: list[str], connect: Connect | None = None) -> Opener:
    """Sessions through the descriptor, as the first writer node's user (no privilege).
    ``connect`` stands in for ``oracledb.connect`` (the tests' stand-in database)."""
    descriptor = writer_descriptor(env, node_names)
    _, access = writer_nodes(env, node_names)[0]
    arguments = connect_arguments(access, descriptor, privileged=False)
    label = f"{access.user}@{access.primary_service} (the primary's service)"

    def opener() -> WriterSession:
        return OracleSession(
            arguments, host="primary", label=label, reconnect=False, connect=connect
        )

    return opener


def node_of(session: WriterSession, env: Environment, node_names: Sequence[str]) -> str:
    """The node a session reached: by DB_UNIQUE_NAME, else by SERVER_HOST; "?" if neither."""
    rows = session.query(IDENTITY_SQL, timeout=5)
    unique, server = (str(v or "").strip().lower() for v in (rows[0] if rows else ("", "")))
    nodes = [(n, env.nodes[n]) for n in node_names]
    for name, node in nodes:
        named = node.oracle.db_unique_name if node.oracle else None
        if unique and named and named.lower() == unique:
            return name
    for name, node in nodes:
        host = node.host.lower()
        if server and server in (host, host.split(".")[0]):
            return name
    return "?"


class Writer(threading.Thread):
    table = ""

    def __init__(
        self,
        opener: Opener,
        env: Environment,
        nodes: list[str],
        run_id: str,
        clock: Clock,
        interval: float,
    ) -> None:
        super().__init__(name=f"drctl-{self.table}", daemon=True)
        self.opener, self.env, self.nodes, self.run_id = opener, env, nodes, run_id
        self.clock, self.interval = clock, interval
        self.log = WriterLog()
        self._stop_event = threading.Event()
        self._session: WriterSession | None = None
        self._node = "?"

    def run(self) -> None:
        seq = 0
        insert = f"INSERT INTO {self.table} (run_id, seq) VALUES (:run_id, :seq)"
        while not self._stop_event.is_set():
            seq += 1
            self.log.attempts += 1
            try:
                if self._session is None:
                    self._session = self.opener()
                    self._node = node_of(self._session, self.env, self.nodes)
                self._session.query(insert, {"run_id": self.run_id, "seq": seq}, timeout=5)
                mono, wall = time.monotonic(), time.time()
                self.log.acks.append(Write(seq, self.clock.offset_of(mono), wall, self._node))
            except DrillError as exc:
                self.log.failures += 1
                self.log.last_error = (exc.message.strip().splitlines() or ["error"])[0]
                self._drop()
            self._stop_event.wait(self.interval)
        self._drop()

    def _drop(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


class CanaryWriter(Writer):
    table = "drctl_canary"


class WriteProbe(Writer):
    table = "drctl_write_probe"


class OracleInstruments:
    """The writers of the Oracle engine, as ``drills.engine.instruments`` asks for them.
    ``connect`` stands in for ``oracledb.connect`` (tests pass the stand-in database's)."""

    def __init__(self, connect: Connect | None = None) -> None:
        self.connect = connect

    def opener(self, env: Environment, nodes: list[str]) -> Opener:
        return live_opener(env, nodes, self.connect)

    def prepare(self, env: Environment, nodes: list[str]) -> None:
        """Create the writers' tables on the current primary (Data Guard carries them over)."""
        try:
            session = self.opener(env, nodes)()
        except DrillError as exc:
            raise ConnectionFailed(
                f"the canary tables could not be made on the primary: {exc.message[:300]}"
            ) from exc
        try:
            for table in TABLES:
                session.query(CREATE_TABLE.format(table=table), timeout=30)
        finally:
            session.close()

    def canary(
        self, env: Environment, nodes: list[str], run_id: str, clock: Clock, interval: float
    ) -> CanaryWriter:
        return CanaryWriter(self.opener(env, nodes), env, nodes, run_id, clock, interval)

    def write_probe(
        self, env: Environment, nodes: list[str], run_id: str, clock: Clock, interval: float
    ) -> WriteProbe:
        return WriteProbe(self.opener(env, nodes), env, nodes, run_id, clock, interval)

    def surviving(self, env: Environment, nodes: list[str], run_id: str) -> tuple[set[int], str]:
        """Canary numbers present on the primary now, and that node's name."""
        session = self.opener(env, nodes)()
        try:
            rows = session.query(
                "SELECT seq FROM drctl_canary WHERE run_id = :run_id", {"run_id": run_id}
            )
            node = node_of(session, env, nodes)
        finally:
            session.close()
        return {int(r[0]) for r in rows}, node
