"""The PostgreSQL engine's writers: the canary writer and the write probe.

While a drill runs, two background writers follow whichever node accepts writes (libpq
multi-host, ``target_session_attrs=read-write``): the canary writer commits numbered rows, the
write probe a tiny write every few milliseconds. Each acknowledgement names the node that took it,
by host and port together (the address libpq connected to), never by port alone: two sites both
listen on 5432. What the logs mean is decided in ``drills.engine.measures``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from psycopg import conninfo

from drills.engine.measures import Write, WriterLog
from drills.executors.postgres import WriterConnection, open_writer
from drills.model.clock import Clock
from drills.model.environment import Environment, read_password
from drills.model.errors import ConnectionFailed, DrillError

SCHEMA_SQL = (
    "create schema if not exists drctl;"
    " create table if not exists drctl.canary (run_id text, seq bigint,"
    " written_at timestamptz not null default clock_timestamp(), primary key (run_id, seq));"
    " create table if not exists drctl.write_probe (run_id text, seq bigint,"
    " written_at timestamptz not null default clock_timestamp(), primary key (run_id, seq))"
)

Endpoints = dict[tuple[str, int], str]  # (host, port) -> node name


def writer_dsn(env: Environment, node_names: list[str]) -> tuple[str, Endpoints]:
    """A multi-host DSN over the nodes, and a map from (host, port) to node name."""
    nodes = [(name, env.nodes[name]) for name in node_names if env.nodes[name].postgres]
    if not nodes:
        raise ConnectionFailed("no database nodes to write to")
    first = nodes[0][1].postgres
    assert first is not None
    params: dict[str, Any] = {
        "host": ",".join(n.host for _, n in nodes),
        "port": ",".join(str(n.port) for _, n in nodes),
        "user": first.user,
        "dbname": first.database,
        "target_session_attrs": "read-write",
        "connect_timeout": 1,
        "application_name": "drctl-writer",
    }
    password = read_password(first)
    if password is not None:
        params["password"] = password
    return conninfo.make_conninfo("", **params), {(n.host, n.port): name for name, n in nodes}


class Writer(threading.Thread):
    table = ""

    def __init__(
        self, dsn: str, endpoints: Endpoints, run_id: str, clock: Clock, interval: float
    ) -> None:
        super().__init__(name=f"drctl-{self.table}", daemon=True)
        self.dsn, self.endpoints, self.run_id = dsn, endpoints, run_id
        self.clock, self.interval = clock, interval
        self.log = WriterLog()
        self._stop_event = threading.Event()
        self._conn: WriterConnection | None = None
        self._node = "?"

    def run(self) -> None:
        seq = 0
        insert = f"insert into drctl.{self.table} (run_id, seq) values (%s, %s)"
        while not self._stop_event.is_set():
            seq += 1
            self.log.attempts += 1
            try:
                if self._conn is None:
                    self._conn = open_writer(self.dsn)
                    self._node = self.endpoints.get(self._conn.endpoint, "?")
                self._conn.execute(insert, (self.run_id, seq))
                mono, wall = time.monotonic(), time.time()
                self.log.acks.append(Write(seq, self.clock.offset_of(mono), wall, self._node))
            except DrillError as exc:
                self.log.failures += 1
                self.log.last_error = (exc.message.strip().splitlines() or ["error"])[0]
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            self._stop_event.wait(self.interval)
        if self._conn is not None:
            self._conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


class CanaryWriter(Writer):
    table = "canary"


class WriteProbe(Writer):
    table = "write_probe"


class PostgresInstruments:
    """The writers of the PostgreSQL engine, as ``drills.engine.instruments`` asks for them."""

    def prepare(self, env: Environment, nodes: list[str]) -> None:
        """Create the drctl schema on the current primary (it replicates to the standbys)."""
        dsn, _ = writer_dsn(env, nodes)
        try:
            conn = open_writer(dsn)
        except DrillError as exc:
            raise ConnectionFailed(
                f"the canary tables could not be made on the primary: {exc.message[:300]}"
            ) from exc
        try:
            conn.execute(SCHEMA_SQL)
        finally:
            conn.close()

    def canary(
        self, env: Environment, nodes: list[str], run_id: str, clock: Clock, interval: float
    ) -> CanaryWriter:
        dsn, endpoints = writer_dsn(env, nodes)
        return CanaryWriter(dsn, endpoints, run_id, clock, interval)

    def write_probe(
        self, env: Environment, nodes: list[str], run_id: str, clock: Clock, interval: float
    ) -> WriteProbe:
        dsn, endpoints = writer_dsn(env, nodes)
        return WriteProbe(dsn, endpoints, run_id, clock, interval)

    def surviving(self, env: Environment, nodes: list[str], run_id: str) -> tuple[set[int], str]:
        """Canary numbers present on the node that accepts writes now, and that node's name."""
        dsn, endpoints = writer_dsn(env, nodes)
        conn = open_writer(dsn)
        try:
            rows = conn.execute("select seq from drctl.canary where run_id = %s", (run_id,))
        finally:
            conn.close()
        return {int(r[0]) for r in rows}, endpoints.get(conn.endpoint, "?")
