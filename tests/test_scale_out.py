"""The scale-out path, for real: a Prefect server on PostgreSQL, a ``process`` work pool and a
worker, the deployments applied from the generated ``prefect.yaml`` with ``prefect deploy``, and
the record store on PostgreSQL (``DRCTL_RECORDS_URL``).

A drill triggered through the API (``prefect deployment run``, as the README says) runs on the
worker, its record is sealed into the shared store, and ``drctl records verify`` passes there,
from the worker's home and from an auditor's that holds nothing but the public key. A run that
names a parameter the form does not have (``tiket``) ends Failed before anything is done.

Three homes, as three hosts would have them: the deployer's (the drill definitions, where
``prefect deploy`` runs), the worker's (journals, locks, the signing key) and the auditor's
(empty). The module starts one PostgreSQL of its own (from the lab's binaries, as the lab's
unprivileged user when we are root) holding the Prefect database, the record store and the
drill's target, then the server and the worker, every one on 127.0.0.1, and stops each by its
pid at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
import yaml

from drills.executors.local import LocalExecutor
from drills.lab.binaries import ensure_system_user, find_pg_bin, reachable_bin
from drills.lab.files import make_dir
from drills.lab.onehost import OS_USER
from drills.lab.processes import wait_processes_gone
from flows.deployments import process_pool_template
from tests.helpers import REPO

pytestmark = [pytest.mark.lab, pytest.mark.prefect]

BIN = Path(sys.executable).parent
POOL = "scale-out"
NAME = "scale-out-check"
DEPLOYMENT = f"drill/{NAME}"
RECORDS_DB = "drctl_records"
PREFECT_DB = "prefect"
PLAYBOOK = {
    "name": "scale-out-check",
    "version": 1,
    "kind": "inspection",
    "title": {"en": "A drill on a worker", "zh": "工作节点上的演练"},
    "roles": ["primary"],
    "preconditions": [{"check": "pg.is_primary", "target": "primary"}],
    "steps": [
        {
            "id": "ask_primary",
            "action": "sql",
            "target": "primary",
            "with": {"statement": "select 41 + 1"},
            "verify": [{"check": "pg.is_primary"}],
        }
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, ready: Callable[[], Any], deadline: float, log: Path | None = None) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = ready()
        if found:
            return found
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
    raise AssertionError(f"{what} did not happen within {deadline:g}s\n{tail}")


class Started:
    """The processes the module started, each in a session of its own, stopped by its pid (and
    that session's group: a server's or worker's children) in reverse order."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[subprocess.Popen[bytes], signal.Signals]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        stop_with: signal.Signals = signal.SIGTERM,
        **popen: Any,
    ) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **popen,
            )
        self.procs.append((proc, stop_with))
        return proc

    def stop_all(self) -> None:
        for proc, how in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, how)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


@dataclass(frozen=True)
class ScaleOut:
    api: str
    records_url: str
    deployment_id: UUID
    worker_home: Path
    auditor_home: Path
    env: dict[str, str]  # what a client of this Prefect server runs with (no DRCTL_HOME)
    started: Started


@dataclass(frozen=True)
class Postgres:
    port: int
    data_dir: Path
    bin_dir: Path
    os_user: str | None


def start_postgres(root: Path, started: Started) -> Postgres:
    """A PostgreSQL of the module's own on 127.0.0.1."""
    local = LocalExecutor()
    user = OS_USER if os.geteuid() == 0 else None
    pg_bin = find_pg_bin()
    popen: dict[str, Any] = {}
    if user is not None:
        ensure_system_user(user, local)
        pg_bin, _ = reachable_bin(pg_bin, user, root / "pgbin")
        entry = pwd.getpwnam(user)
        popen = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    data = root / "pgdata"
    make_dir(data, user)
    local.run(
        [str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        user=user, timeout=120,
    )  # fmt: skip
    port = free_port()
    settings = [
        f"port={port}",
        "listen_addresses=127.0.0.1",
        "unix_socket_directories=",
        "max_connections=100",
        "shared_buffers=32MB",
        # A scratch database: durability is not what this module tests.
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
    ]
    argv = [str(pg_bin / "postgres"), "-D", str(data)]
    for setting in settings:
        argv += ["-c", setting]
    started.start("postgres", argv, dict(os.environ), data, signal.SIGINT, **popen)

    def answers() -> bool:
        try:
            with psycopg.connect(
                f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2
            ):
                return True
        except psycopg.OperationalError:
            return False

    wait_for("PostgreSQL accepting connections", answers, 60, started.log("postgres"))
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {PREFECT_DB}")
        c.execute(f"CREATE DATABASE {RECORDS_DB}")
    return Postgres(port, data, pg_bin, user)


def write_drill(root: Path, deployer_home: Path, pg: Postgres) -> Path:
    """The playbook, the environment (the module's PostgreSQL as the primary) and the drill
    definition, in the deployer's ``DRCTL_HOME/drills``; returns that folder."""
    playbook = root / f"{PLAYBOOK['name']}.yaml"
    playbook.write_text(yaml.safe_dump(PLAYBOOK, allow_unicode=True, sort_keys=False))
    environment = root / "scale-out-env.yaml"
    environment.write_text(
        yaml.safe_dump(
            {
                "name": "scale-out-env",
                "description": "The scale-out test's own PostgreSQL on 127.0.0.1.",
                "protected": False,
                "nodes": {
                    "pg1": {
                        "role": "primary",
                        "host": "127.0.0.1",
                        "port": pg.port,
                        "executor": "local",
                        "postgres": {
                            "data_dir": str(pg.data_dir),
                            "bin_dir": str(pg.bin_dir),
                            **({"os_user": pg.os_user} if pg.os_user else {}),
                            "user": "postgres",
                            "database": "postgres",
                        },
                    }
                },
            },
            sort_keys=False,
        )
    )
    drills = deployer_home / "drills"
    drills.mkdir(parents=True)
    (drills / f"{NAME}.yaml").write_text(
        yaml.safe_dump(
            {
                "name": NAME,
                "title": {"en": "Scale-out check", "zh": "扩展部署检查"},
                "playbook": str(playbook),
                "environment": str(environment),
                "work_pool": POOL,
                "schedules": [{"cron": "0 3 1 1 *", "active": False}],
            },
            allow_unicode=True,
        )
    )
    return drills


def run_ok(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=180,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return result.stdout


def client(api: str) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api)


@pytest.fixture(scope="module")
def scale_out() -> Iterator[ScaleOut]:
    root = Path(tempfile.mkdtemp(prefix="drctl-scale-out-", dir="/tmp"))
    root.chmod(0o755)  # the lab's user reaches its data directory and the binaries' copy
    logs = root / "logs"
    logs.mkdir()
    started = Started(logs)
    try:
        homes = {name: root / name for name in ("deployer", "worker", "auditor", "prefect")}
        for path in homes.values():
            path.mkdir()
        pg = start_postgres(root, started)
        records_url = f"postgresql://postgres@127.0.0.1:{pg.port}/{RECORDS_DB}"
        api_port = free_port()
        api = f"http://127.0.0.1:{api_port}/api"
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRCTL_"))}
        env = {
            **clean,
            "PREFECT_HOME": str(homes["prefect"]),
            "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_CLI_WRAP_LINES": "false",
        }
        started.start(
            "server",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
             str(api_port)],
            {
                **env,
                "PREFECT_API_DATABASE_CONNECTION_URL": (
                    f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/{PREFECT_DB}"
                ),
            },
            root,
        )  # fmt: skip

        def healthy() -> bool:
            try:
                return httpx.get(api + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the Prefect server on PostgreSQL", healthy, 180, started.log("server"))

        # The work pool, its runs started as `python -m prefect.engine` (README: the workers).
        template = root / "pool-template.json"
        template.write_text(json.dumps(process_pool_template(str(BIN / "python"))))
        run_ok(
            [str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process",
             "--base-job-template", str(template)],
            env, root,
        )  # fmt: skip

        # The deployments, from the generated prefect.yaml, in a folder holding only it.
        deployer = {**env, "DRCTL_HOME": str(homes["deployer"])}
        definitions = write_drill(root, homes["deployer"], pg)
        deploy = root / "deploy"
        deploy.mkdir()
        run_ok(
            [str(BIN / "drctl"), "deployments", "prefect-yaml", str(definitions), "--output",
             str(deploy / "prefect.yaml")],
            deployer, deploy,
        )  # fmt: skip
        run_ok([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], deployer, deploy)

        started.start(
            "worker",
            [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
            {
                **env,
                "DRCTL_HOME": str(homes["worker"]),
                "DRCTL_RECORDS_URL": records_url,
                "PREFECT_WORKER_QUERY_SECONDS": "0.5",
            },
            root,
        )
        with client(api) as c:
            deployment = c.read_deployment_by_name(DEPLOYMENT)
            wait_for(
                "the worker polling the pool",
                lambda: c.read_workers_for_work_pool(POOL),
                60,
                started.log("worker"),
            )
        yield ScaleOut(
            api=api,
            records_url=records_url,
            deployment_id=deployment.id,
            worker_home=homes["worker"],
            auditor_home=homes["auditor"],
            env=env,
            started=started,
        )
    finally:
        started.stop_all()
        wait_processes_gone(root / "pgdata", "the scale-out test's PostgreSQL")
        shutil.rmtree(root, ignore_errors=True)


def wait_final(scale: ScaleOut, flow_run_id: UUID, deadline: float = 120) -> Any:
    with client(scale.api) as c:

        def final() -> Any:
            run = c.read_flow_run(flow_run_id)
            return run if run.state is not None and run.state.is_final() else None

        return wait_for(
            f"flow run {flow_run_id} ending", final, deadline, scale.started.log("worker")
        )


def logs_of(scale: ScaleOut, flow_run_id: UUID, containing: str) -> list[str]:
    """The flow run's log messages, once one contains ``containing`` (logs arrive in batches)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with client(scale.api) as c:

        def read() -> list[str]:
            found = c.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            messages = [str(log.message) for log in found]
            return messages if any(containing in m for m in messages) else []

        messages: list[str] = wait_for(f"a log saying {containing!r}", read, 30)
        return messages


def sealed_records(url: str) -> list[dict[str, Any]]:
    """Every drill record in the shared store, as sealed (read straight from PostgreSQL)."""
    with psycopg.connect(url) as conn:
        try:
            rows = conn.execute("SELECT body FROM drctl_records ORDER BY seq").fetchall()
        except psycopg.errors.UndefinedTable:
            return []
    return [json.loads(row[0]) for row in rows]


def drctl(scale: ScaleOut, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "drctl"), *args],
        env={**scale.env, "DRCTL_HOME": str(home), "DRCTL_RECORDS_URL": scale.records_url},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_a_drill_triggered_through_the_api_runs_on_the_worker_into_the_shared_store(
    scale_out: ScaleOut,
) -> None:
    scale = scale_out
    triggered = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", DEPLOYMENT, "--param", "operator=Wang Li",
         "--param", "ticket=CHG-77"],
        env=scale.env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert triggered.returncode == 0, triggered.stdout + triggered.stderr
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", triggered.stdout)
    assert match, triggered.stdout
    flow_run_id = UUID(match.group(1))

    run = wait_final(scale, flow_run_id)
    assert run.state.is_completed(), (run.state, scale.started.log("worker").read_text()[-3000:])
    assert run.work_pool_name == POOL and run.infrastructure_pid  # the worker's process ran it
    # The pool's command started the run (flows.preload): no workspace copied first.
    worker_log = scale.started.log("worker").read_text(errors="replace")
    assert "Downloading flow code" not in worker_log, worker_log[-3000:]
    assert run.parameters["operator"] == "Wang Li" and run.parameters["ticket"] == "CHG-77"

    # The record is in the shared store on PostgreSQL, and only there.
    [record] = [
        r
        for r in sealed_records(scale.records_url)
        if r.get("orchestrator", {}).get("prefect_flow_run_id") == str(flow_run_id)
    ]
    assert record["status"] == "passed" and record["id"] in str(run.state.message)
    assert record["request"]["operator"] == "Wang Li" and record["request"]["ticket"] == "CHG-77"
    assert [s["id"] for s in record["steps"]] == ["ask_primary"]
    orchestrator = record["orchestrator"]
    assert orchestrator["watched_by"] == "prefect"
    assert orchestrator["prefect_api"] == scale.api
    assert orchestrator["started_by"] == "Prefect UI or API"
    assert orchestrator["prefect_deployment_id"] == str(scale.deployment_id)
    assert orchestrator["os_user"] == getpass.getuser()  # the worker's account, apart
    assert (scale.worker_home / "records" / f"{record['id']}.journal.jsonl").is_file()
    assert not (scale.worker_home / "records" / "records.sqlite3").exists()

    # `drctl records verify` passes there: on the worker's host (its key), and on an auditor's
    # that has only the public key, reading the same store.
    on_worker = drctl(scale, scale.worker_home, "records", "verify")
    assert on_worker.returncode == 0, on_worker.stdout + on_worker.stderr
    public = scale.worker_home / "keys" / "records-ed25519.pub"
    audited = drctl(scale, scale.auditor_home, "records", "verify", "--public-key", str(public))
    assert audited.returncode == 0, audited.stdout + audited.stderr
    listed = drctl(scale, scale.auditor_home, "records", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert record["id"] in {r["id"] for r in json.loads(listed.stdout)}
    # ...and it is the key that makes it pass: the auditor's own (another) key does not.
    assert drctl(scale, scale.auditor_home, "keys", "init").returncode == 0
    other = scale.auditor_home / "keys" / "records-ed25519.pub"
    wrong = drctl(scale, scale.auditor_home, "records", "verify", "--public-key", str(other))
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr


def test_a_mistyped_parameter_fails_the_run_before_anything_is_done(scale_out: ScaleOut) -> None:
    scale = scale_out
    # Prefect's CLI checks the names itself...
    cli = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", DEPLOYMENT, "--param", "operator=Wang Li",
         "--param", "tiket=CHG-78"],
        env=scale.env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert cli.returncode == 1 and "tiket" in cli.stdout + cli.stderr, cli.stdout + cli.stderr

    # ...but the API (and the UI's JSON form) take any extra top-level name: the flow refuses it.
    before = len(sealed_records(scale.records_url))
    journals = set((scale.worker_home / "records").glob("*.journal.jsonl"))
    with client(scale.api) as c:
        created = c.create_flow_run_from_deployment(
            scale.deployment_id,
            parameters={"operator": "Wang Li", "ticket": "CHG-78", "tiket": "CHG-78"},
        )
    run = wait_final(scale, created.id)
    assert run.state.is_failed(), (run.state, scale.started.log("worker").read_text()[-3000:])
    message = str(run.state.message)
    assert "'tiket' (did you mean 'ticket'?)" in message, message
    assert "its parameters are playbook, environment, operator, ticket, mode" in message, message
    # Nothing was done: no journal, no record, no traceback.
    assert set((scale.worker_home / "records").glob("*.journal.jsonl")) == journals
    assert len(sealed_records(scale.records_url)) == before
    logs = logs_of(scale, created.id, "does not have")
    assert not any("Traceback" in m for m in logs), logs
    worker_log = scale.started.log("worker").read_text(errors="replace")
    assert f"drctl: flow run {created.id}: the run names a parameter" in worker_log
    assert "SignatureMismatchError" not in worker_log
