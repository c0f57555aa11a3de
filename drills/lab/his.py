"""A small HIS stand-in: the application tier of the lab.

It answers what a hospital information system must keep doing through a switch: a health
endpoint, and patient registration (挂号) written to and read back from the database::

    GET  /health                  200 {"status": "ok"} when a writable database answers, else 503
    POST /registrations           {"patient_name": "...", "department": "..."} -> 201 {...}
    GET  /registrations/<id>      200 {...} or 404

Its database connection follows the primary: libpq multi-host with
``target_session_attrs=read-write``, as a real application should be configured. It is run
as its own process (``python -m drills.lab.his``) by ``drctl lab up`` and stopped by ``drctl lab
down``. The standard library's threading HTTP server is enough for a lab stand-in and adds no
dependency; it only ever listens on a loopback address (127.0.0.1, or 127.0.0.4 in the two-site
lab).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

from drills.lab.processes import terminate

SCHEMA = (
    "create schema if not exists his;"
    " create table if not exists his.registration ("
    " id bigserial primary key, patient_name text not null, department text not null,"
    " created_at timestamptz not null default clock_timestamp())"
)
INSERT = (
    "insert into his.registration (patient_name, department) values (%s, %s)"
    " returning id, patient_name, department, created_at::text, inet_server_port(),"
    " host(inet_server_addr())"
)
SELECT = (
    "select id, patient_name, department, created_at::text, inet_server_port(),"
    " host(inet_server_addr()) from his.registration where id = %s"
)
# The server that answered, host and port together: two sites may both listen on 5432.
FIELDS = ("id", "patient_name", "department", "created_at", "served_by_port", "served_by_host")


class Database:
    """One connection per server thread, replaced when it fails (the primary moved)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.local = threading.local()

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        for attempt in (1, 2):
            conn: psycopg.Connection | None = getattr(self.local, "conn", None)
            fresh = conn is None
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                    self.local.conn = conn
                cur = conn.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
            except psycopg.OperationalError:
                if conn is not None:
                    conn.close()
                self.local.conn = None
                if fresh or attempt == 2:
                    raise
        raise AssertionError("unreachable")


def make_handler(db: Database) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "his-standin/1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the lab log

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _database_error(self, exc: psycopg.Error) -> None:
            self._send(503, {"error": "database unavailable", "detail": str(exc).strip()[:300]})

        def do_GET(self) -> None:
            if self.path == "/health":
                try:
                    db.run("select 1")
                except psycopg.Error as exc:
                    self._database_error(exc)
                    return
                self._send(200, {"status": "ok"})
                return
            match = re.fullmatch(r"/registrations/(\d+)", self.path)
            if not match:
                self._send(404, {"error": "not found"})
                return
            try:
                rows = db.run(SELECT, (int(match.group(1)),))
            except psycopg.Error as exc:
                self._database_error(exc)
                return
            if not rows:
                self._send(404, {"error": "no such registration"})
                return
            self._send(200, dict(zip(FIELDS, rows[0], strict=True)))

        def do_POST(self) -> None:
            if self.path != "/registrations":
                self._send(404, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                name, department = str(body["patient_name"]), str(body["department"])
            except (ValueError, KeyError, TypeError):
                self._send(400, {"error": "patient_name and department are required"})
                return
            try:
                rows = db.run(INSERT, (name, department))
            except psycopg.Error as exc:
                self._database_error(exc)
                return
            self._send(201, dict(zip(FIELDS, rows[0], strict=True)))

    return Handler


def serve(port: int, dsn: str, host: str = "127.0.0.1") -> None:
    db = Database(dsn)
    deadline = time.monotonic() + 30
    while True:  # the schema goes on the primary; wait for one that takes writes
        try:
            db.run(SCHEMA)
            break
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    server = ThreadingHTTPServer((host, port), make_handler(db))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"his stand-in listening on {host}:{port}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The lab's HIS stand-in web service.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--dsn", required=True, help="libpq DSN that follows the primary")
    args = parser.parse_args(argv)
    if not args.host.startswith("127."):
        parser.error("the stand-in listens on a loopback address (127.0.0.0/8) only")
    serve(args.port, args.dsn, args.host)


# -- running it as the lab's process -----------------------------------------------------------


@dataclass(frozen=True)
class StandIn:
    pid: int
    port: int
    log_file: Path
    host: str = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start(
    state_file: Path, log_file: Path, dsn: str, port: int | None = None, host: str = "127.0.0.1"
) -> StandIn:
    """Start the stand-in in the background and wait until it answers /health."""
    import httpx

    port = port or free_port(host)
    with log_file.open("ab") as log:
        argv = [sys.executable, "-m", "drills.lab.his", "--port", str(port), "--host", host]
        proc = subprocess.Popen(
            [*argv, "--dsn", dsn],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    standin = StandIn(proc.pid, port, log_file, host)
    state_file.write_text(
        json.dumps({"pid": proc.pid, "port": port, "log": str(log_file), "host": host})
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if (
                httpx.get(f"{standin.base_url}/health", timeout=1, trust_env=False).status_code
                == 200
            ):
                return standin
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(state_file)
    tail = log_file.read_text(errors="replace")[-1500:] if log_file.exists() else ""
    raise RuntimeError(f"the HIS stand-in did not answer on {host}:{port}\n{tail}")


def running(state_file: Path) -> StandIn | None:
    try:
        data = json.loads(state_file.read_text())
        pid, port, log = int(data["pid"]), int(data["port"]), Path(data["log"])
        host = str(data.get("host") or "127.0.0.1")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return StandIn(pid, port, log, host) if b"drills.lab.his" in cmdline else None


def app_status(state_file: Path) -> dict[str, object] | None:
    """The stand-in a lab started: its URL, pid, and whether /health answers 200 now."""
    app = running(state_file)
    if app is None:
        return None
    import httpx

    try:
        health = httpx.get(f"{app.base_url}/health", timeout=2, trust_env=False).status_code
    except httpx.HTTPError:
        health = None
    return {"name": "app", "role": "app", "url": app.base_url, "pid": app.pid, "health": health}


def stop(state_file: Path) -> int | None:
    """Stop the stand-in named by the state file; the pid it stopped, or None."""
    standin = running(state_file)
    if standin is not None:
        terminate(standin.pid, lambda: running(state_file) is None)
    state_file.unlink(missing_ok=True)
    return standin.pid if standin is not None else None


if __name__ == "__main__":
    main()
