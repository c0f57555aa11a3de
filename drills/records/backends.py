"""The record store's two back ends, SQLite and PostgreSQL, and their schemas.

Both hold the same three tables: ``drctl_records`` (the chain: seq, id, kind, header, hash,
signature, body), ``drctl_evidence`` (the journal and attachments of each record, as bytes) and
``drctl_head`` (the signed newest seq and hash), with triggers that refuse UPDATE and DELETE on
the chain and evidence tables. :class:`~drills.records.store.RecordStore` seals and reads through
a :class:`Backend`; :func:`open_backend` picks one from ``DRCTL_RECORDS_URL``. The store's errors
are defined here, where they are first raised; :mod:`drills.records.store` re-exports them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from drills.model.errors import DrillError, ExecutorError, InputError
from drills.model.redact import redact, register
from drills.records.chain import GENESIS, Entry

SQLITE_FILE = "records.sqlite3"
# SQLite's primary result codes for "the disk cannot take it now": SQLITE_READONLY, SQLITE_IOERR,
# SQLITE_FULL, SQLITE_CANTOPEN (the low byte of the extended code sqlite3 puts on the exception).
_NO_ROOM_CODES = {8, 10, 13, 14}


class StoreError(DrillError):
    """The record store could not be read or written."""


class StoreUnavailable(StoreError):
    """The record store could not be reached at all."""


@dataclass(frozen=True)
class Draft:
    """A record (or an annotation) ready to be sealed: its content and its evidence."""

    record_id: str
    kind: str
    refs: list[str]
    summary: dict[str, str]
    body: bytes
    evidence: list[tuple[str, bytes]]


SCHEMA_SQLITE = """
CREATE TABLE IF NOT EXISTS drctl_records (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    ref TEXT,
    header TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drctl_records_ref ON drctl_records(ref);
CREATE TABLE IF NOT EXISTS drctl_evidence (
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    content BLOB NOT NULL,
    PRIMARY KEY (seq, name)
);
CREATE TABLE IF NOT EXISTS drctl_head (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    head TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS drctl_records_no_update BEFORE UPDATE ON drctl_records
BEGIN SELECT RAISE(ABORT, 'drctl records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS drctl_records_no_delete BEFORE DELETE ON drctl_records
BEGIN SELECT RAISE(ABORT, 'drctl records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS drctl_evidence_no_update BEFORE UPDATE ON drctl_evidence
BEGIN SELECT RAISE(ABORT, 'drctl evidence is append-only'); END;
CREATE TRIGGER IF NOT EXISTS drctl_evidence_no_delete BEFORE DELETE ON drctl_evidence
BEGIN SELECT RAISE(ABORT, 'drctl evidence is append-only'); END;
"""

SCHEMA_POSTGRES = """
CREATE TABLE IF NOT EXISTS drctl_records (
    seq BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    ref TEXT,
    header TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drctl_records_ref ON drctl_records(ref);
CREATE TABLE IF NOT EXISTS drctl_evidence (
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    content BYTEA NOT NULL,
    PRIMARY KEY (seq, name)
);
CREATE TABLE IF NOT EXISTS drctl_head (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    head TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE OR REPLACE FUNCTION drctl_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'drctl % is append-only', TG_TABLE_NAME; END $$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'drctl_records_append_only') THEN
        CREATE TRIGGER drctl_records_append_only BEFORE UPDATE OR DELETE ON drctl_records
            FOR EACH ROW EXECUTE FUNCTION drctl_append_only();
        CREATE TRIGGER drctl_records_no_truncate BEFORE TRUNCATE ON drctl_records
            FOR EACH STATEMENT EXECUTE FUNCTION drctl_append_only();
        CREATE TRIGGER drctl_evidence_append_only BEFORE UPDATE OR DELETE ON drctl_evidence
            FOR EACH ROW EXECUTE FUNCTION drctl_append_only();
        CREATE TRIGGER drctl_evidence_no_truncate BEFORE TRUNCATE ON drctl_evidence
            FOR EACH STATEMENT EXECUTE FUNCTION drctl_append_only();
    END IF;
END $$;
"""

COLUMNS = "seq, id, kind, header, hash, signature"
Sealer = Callable[[Draft | None, int, str], tuple[Entry | None, bytes, str]]


def _entry(row: Any, with_body: bool) -> Entry:
    return Entry(
        seq=int(row[0]),
        id=str(row[1]),
        kind=str(row[2]),
        header=str(row[3]).encode("utf-8"),
        hash=str(row[4]),
        signature=str(row[5]),
        body=str(row[6]).encode("utf-8") if with_body else None,
    )


def _bytes(value: Any) -> bytes:
    """Evidence as stored (a BLOB, or text if someone rewrote it as text)."""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _row(entry: Entry) -> tuple[Any, ...]:
    assert entry.body is not None
    return (
        entry.seq,
        entry.id,
        entry.kind,
        entry.refs[0] if entry.refs else None,
        entry.header.decode("utf-8"),
        entry.hash,
        entry.signature,
        entry.body.decode("utf-8"),
    )


class Backend(Protocol):
    location: str

    def append(self, drafts: list[Draft], seal: Sealer) -> list[Entry]:
        """Under the store's write lock, in one transaction: ``seal(draft, seq, prev_hash)``
        makes each entry, ``seal(None, seq, hash)`` the signed head after the last."""
        ...

    def get(self, record_id: str) -> Entry | None: ...
    def referring(self, record_id: str) -> list[Entry]: ...
    def entries(self, *, with_body: bool) -> Iterator[Entry]: ...
    def evidence(self, seq: int, name: str) -> bytes | None: ...
    def all_evidence(self) -> dict[tuple[int, str], bytes]: ...
    def head(self) -> tuple[bytes, str] | None: ...
    def ids(self, kind: str) -> list[str]: ...


class _Reads:
    """The reads both back ends share; they differ only in the driver's placeholder."""

    placeholder = "?"

    def _connect(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        return text.replace("?", self.placeholder)

    def get(self, record_id: str) -> Entry | None:
        with self._connect() as conn:
            row = conn.execute(
                self._sql(f"SELECT {COLUMNS}, body FROM drctl_records WHERE id = ?"), (record_id,)
            ).fetchone()
        return _entry(row, True) if row else None

    def referring(self, record_id: str) -> list[Entry]:
        with self._connect() as conn:
            rows = conn.execute(
                self._sql(f"SELECT {COLUMNS}, body FROM drctl_records WHERE ref = ? ORDER BY seq"),
                (record_id,),
            ).fetchall()
        return [_entry(r, True) for r in rows]

    def entries(self, *, with_body: bool) -> Iterator[Entry]:
        columns = f"{COLUMNS}, body" if with_body else COLUMNS
        with self._connect() as conn:
            cursor = conn.execute(f"SELECT {columns} FROM drctl_records ORDER BY seq")
            while rows := cursor.fetchmany(1000):
                for row in rows:
                    yield _entry(row, with_body)

    def evidence(self, seq: int, name: str) -> bytes | None:
        with self._connect() as conn:
            row = conn.execute(
                self._sql("SELECT content FROM drctl_evidence WHERE seq = ? AND name = ?"),
                (seq, name),
            ).fetchone()
        return _bytes(row[0]) if row else None

    def all_evidence(self) -> dict[tuple[int, str], bytes]:
        with self._connect() as conn:
            rows = conn.execute("SELECT seq, name, content FROM drctl_evidence").fetchall()
        return {(int(r[0]), str(r[1])): _bytes(r[2]) for r in rows}

    def head(self) -> tuple[bytes, str] | None:
        with self._connect() as conn:
            row = conn.execute("SELECT head, signature FROM drctl_head WHERE one = 1").fetchone()
        return (str(row[0]).encode("utf-8"), str(row[1])) if row else None

    def ids(self, kind: str) -> list[str]:
        with self._connect() as conn:
            rows = conn.execute(
                self._sql("SELECT id FROM drctl_records WHERE kind = ?"), (kind,)
            ).fetchall()
        return [str(r[0]) for r in rows]


class SqliteBackend(_Reads):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.executescript(SCHEMA_SQLITE)

    def _connection(self) -> sqlite3.Connection:
        """One connection per thread, kept for the store's life."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open the record store {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._connection()
        except sqlite3.DatabaseError as exc:
            if ((getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF) in _NO_ROOM_CODES:
                # A full, read-only or failing disk: the store cannot take a record *now*;
                # the run's journal keeps it until `drctl records seal` (as when unreachable).
                raise StoreUnavailable(
                    f"the record store {self.path} cannot take a record now: {exc}"
                ) from exc
            raise StoreError(f"record store {self.path}: {exc}") from exc

    def append(self, drafts: list[Draft], seal: Sealer) -> list[Entry]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                last = conn.execute(
                    "SELECT seq, hash FROM drctl_records ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, prev = (int(last[0]), str(last[1])) if last else (0, GENESIS)
                entries = []
                for draft in drafts:
                    entry, _, _ = seal(draft, seq + 1, prev)
                    assert entry is not None and entry.body is not None
                    conn.execute(
                        "INSERT INTO drctl_records"
                        " (seq, id, kind, ref, header, hash, signature, body)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        _row(entry),
                    )
                    conn.executemany(
                        "INSERT INTO drctl_evidence (seq, name, content) VALUES (?, ?, ?)",
                        [(entry.seq, name, content) for name, content in draft.evidence],
                    )
                    entries.append(entry)
                    seq, prev = entry.seq, entry.hash
                _, head, head_sig = seal(None, seq, prev)
                conn.execute(
                    "INSERT INTO drctl_head (one, head, signature) VALUES (1, ?, ?) "
                    "ON CONFLICT (one) DO UPDATE SET head = excluded.head, "
                    "signature = excluded.signature",
                    (head.decode("utf-8"), head_sig),
                )
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does): keep the first error.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return entries


class PostgresBackend(_Reads):
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        from drills.executors.postgres import make_dsn, parse_dsn

        self.url = url
        params = parse_dsn(url, "DRCTL_RECORDS_URL")
        register(str(params.pop("password", "") or ""))
        self.location = "postgresql: " + make_dsn(**params)
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('drctl_records_schema'))")
            conn.execute(SCHEMA_POSTGRES)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Any]:
        # psycopg's errors become ours in drills.executors.postgres; here only what they mean
        # for the store.
        from drills.executors.postgres import errors, open_connection

        try:
            conn = open_connection(self.url, host="record store")
        except DrillError as exc:
            raise StoreUnavailable(
                f"cannot reach the record store ({self.location}): {redact(exc.message)}"
            ) from exc
        try:
            with errors(host="record store"):
                yield conn
        except (StoreError, StoreUnavailable):
            raise
        except ExecutorError as exc:
            raise StoreError(f"record store ({self.location}): {redact(exc.message)}") from exc
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def append(self, drafts: list[Draft], seal: Sealer) -> list[Entry]:
        entries = []
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('drctl_records_append'))")
            last = conn.execute(
                "SELECT seq, hash FROM drctl_records ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev = (int(last[0]), str(last[1])) if last else (0, GENESIS)
            for draft in drafts:
                entry, _, _ = seal(draft, seq + 1, prev)
                assert entry is not None and entry.body is not None
                conn.execute(
                    "INSERT INTO drctl_records (seq, id, kind, ref, header, hash, signature, body)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    _row(entry),
                )
                for name, content in draft.evidence:
                    conn.execute(
                        "INSERT INTO drctl_evidence (seq, name, content) VALUES (%s, %s, %s)",
                        (entry.seq, name, content),
                    )
                entries.append(entry)
                seq, prev = entry.seq, entry.hash
            _, head, head_sig = seal(None, seq, prev)
            conn.execute(
                "INSERT INTO drctl_head (one, head, signature) VALUES (1, %s, %s) "
                "ON CONFLICT (one) DO UPDATE SET head = excluded.head, "
                "signature = excluded.signature",
                (head.decode("utf-8"), head_sig),
            )
        return entries


def open_backend(url: str | None, records_dir: Path) -> Backend:
    if not url:
        return SqliteBackend(records_dir / SQLITE_FILE)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(url)
    if url.startswith("sqlite:///"):
        return SqliteBackend(Path(url.removeprefix("sqlite://")))
    raise InputError(
        "DRCTL_RECORDS_URL must be postgresql://USER@HOST:PORT/DB or sqlite:///PATH, "
        f"not {redact(url)!r}"
    )
