"""Benchmark: how long a drill started from Prefect (the UI's "Run", an API call) waits before its
first step, served (``drctl serve``) and on a work pool's worker, against Prefect's defaults.

Run it from the repository root::

    .venv/bin/python bench/trigger_latency.py [--rounds 5] [--baseline-rounds 2] [--no-baseline]
        [--only served|worker] [--keep-logs DIR]

It makes a throw-away folder under /tmp with its own ``DRCTL_HOME`` and ``PREFECT_HOME``, starts a
real ``prefect server start`` on a free 127.0.0.1 port (SQLite), and a one-step drill (a local
``true``, no database, so what is measured is the orchestration). Then, round by round, it
creates a flow run of the deployment through the API, as the UI's "Run" does (with the operator
and the ticket the form requires), and takes the time from that call to the first step's
``started_at`` in the drill's record (the runner's own clock), and to the flow run's start in
Prefect (the pick-up):

1. **Served.** ``drctl serve`` of the definition (deployment ``drill/NAME-served``), tuned: it asks
   the server for runs every ``DRCTL_SERVE_POLL_SECONDS`` (default 0.5 s). Baseline: the same with
   Prefect's default query interval (``PREFECT_RUNNER_POLL_FREQUENCY``, 10 s).
2. **Worker.** ``process`` work pools, the definitions deployed to them with ``prefect deploy`` from
   ``drctl deployments prefect-yaml`` (the flow's code is the installed drctl: ``pull: []``, no
   download), and ``prefect worker start --pool … --prefetch-seconds 60`` with
   ``PREFECT_WORKER_QUERY_SECONDS=0.5``. Tuned: the pool made with drctl's template
   (``flows.deployments.process_pool_template``: each run starts as ``python -m flows.preload``).
   Baselines: the same worker on a pool with Prefect's default template (a run starts as a
   process that prepares a workspace, then the engine's), side by side with the tuned one and
   taking turns with it; then a worker with Prefect's defaults (a query every 10 s).

Each variant's first run after its worker started is printed apart and not counted. For each
variant it prints where the time went (medians, from the flow run's state history): trigger ->
Pending (the worker's poll), Pending -> Running (the run's process: starting Python, importing
Prefect and drctl, loading the flow, the catalogue), Running -> first step (the flow body).

Targets (PASS/FAIL lines; medians): served <= 2 s, worker <= 3 s. Every process it starts (the
server, ``drctl serve``, the workers) is stopped by its pid, and the folder removed, however the
benchmark ends. The exit code is 0 whatever the figures are; non-zero only on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVED_TARGET = 2.0
WORKER_TARGET = 3.0
POOL = "bench-pool"  # its runs start as `python -m prefect.engine` (process_pool_template)
POOL_DEFAULT = "bench-default-pool"  # Prefect's default process template


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Every process the benchmark starts, stopped by its pid (SIGTERM, then SIGKILL)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Any:
        out = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: it and its children
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            self.stop(proc)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""


def wait_for(what: str, predicate: Any, deadline: float = 120, proc: Any = None) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process it needs exited ({proc.returncode})")
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not happen within {deadline:g}s")


def write_drill(where: Path, home: Path) -> tuple[Path, Path]:
    env = where / "bench-env.yaml"
    env.write_text(
        yaml.safe_dump(
            {"name": "bench-env", "nodes": {"app1": {"role": "local", "host": "127.0.0.1"}}}
        )
    )
    playbook = where / "bench-trigger.yaml"
    playbook.write_text(
        yaml.safe_dump(
            {
                "name": "bench-trigger",
                "version": 1,
                "kind": "inspection",
                "title": {"en": "Trigger latency", "zh": "触发延迟"},
                "roles": ["local"],
                "steps": [
                    {
                        "id": "first",
                        "action": "shell",
                        "target": "local",
                        "with": {"command": "true"},
                    }
                ],
            },
            allow_unicode=True,
        )
    )
    # The definitions live in DRCTL_HOME/drills, where `prefect deploy` (which builds the run
    # form from what this host knows) finds the playbook and the environment they name.
    drills = home / "drills"
    drills.mkdir(parents=True)
    for name, pool in (
        ("bench-serve", None),
        ("bench-pool", POOL),
        ("bench-plain", POOL_DEFAULT),
        ("bench-default", POOL_DEFAULT),
    ):
        body: dict[str, Any] = {
            "name": name,
            "title": {"en": name, "zh": "基准"},
            "playbook": str(playbook),
            "environment": str(env),
            "schedules": [{"cron": "0 3 1 1 *", "active": False}],
        }
        if pool:
            body["work_pool"] = pool
        (drills / f"{name}.yaml").write_text(yaml.safe_dump(body, allow_unicode=True))
    return drills / "bench-serve.yaml", drills


def first_step_at(home: Path, flow_run_id: str) -> float | None:
    """The wall time the drill's first step started, from its record (None: not yet)."""
    for path in (home / "records").glob("*.journal.jsonl"):
        lines = path.read_text().splitlines()
        if not lines:
            continue
        first = json.loads(lines[0])
        if first.get("orchestrator", {}).get("prefect_flow_run_id") != flow_run_id:
            continue
        for line in lines[1:]:
            event = json.loads(line)
            if event.get("event") == "step":
                at = str(event["step"]["started_at"]).replace("Z", "+00:00")
                return datetime.fromisoformat(at).timestamp()
    return None


def trigger_rounds(
    home: Path, targets: dict[str, str], rounds: int, procs: list[Any]
) -> dict[str, list[dict[str, float]]]:
    """``rounds`` runs of each deployment in ``targets`` (label -> name), taking turns, after
    one run of each that is not counted (a worker's first run loads what later ones find
    loaded; its figure is printed apart). Taking turns, a load that comes and goes on the machine
    falls on every variant alike."""
    from prefect.client.orchestration import get_client

    results: dict[str, list[dict[str, float]]] = {label: [] for label in targets}
    with get_client(sync_client=True) as client:
        found = {
            label: wait_for(f"deployment {name}", lambda n=name: _deployment(client, n), proc=p)
            for (label, name), p in zip(targets.items(), procs, strict=True)
        }
        for index in range(rounds + 1):
            for (label, deployment), proc in zip(found.items(), procs, strict=True):
                time.sleep(0.37 * (index % 3))  # not in step with the poll
                row = one_run(client, home, deployment.id, f"BENCH-{label}-{index}", proc)
                if index == 0:
                    print(f"  {label:<44} first run (not counted): {row['first_step']:.2f}s")
                else:
                    results[label].append(row)
    return results


def one_run(
    client: Any, home: Path, deployment_id: Any, ticket: str, proc: Any
) -> dict[str, float]:
    began = time.time()
    run = client.create_flow_run_from_deployment(
        deployment_id, parameters={"operator": "bench (trigger latency)", "ticket": ticket}
    )

    def ended() -> Any:
        state = client.read_flow_run(run.id)
        return state if state.state and state.state.is_final() else None

    final = wait_for(f"flow run {run.id}", ended, 120, proc)
    first = first_step_at(home, str(run.id))
    if first is None or not final.state.is_completed():
        raise RuntimeError(f"flow run {run.id} ended {final.state!r} without a first step")
    picked = final.start_time.timestamp() if final.start_time else float("nan")
    row = {"first_step": first - began, "picked_up": picked - began}
    row.update(phases(client.read_flow_run_states(run.id), began, first))
    return row


def phases(states: list[Any], began: float, first: float) -> dict[str, float]:
    """Where the time went, from the flow run's state history: until a worker (or serve) took
    the run (Pending), until the run's own process had loaded the flow and said Running, and
    from Running to the first step (the flow body: the request, the runner, the playbook)."""
    at: dict[str, float] = {}
    for state in sorted(states, key=lambda s: s.timestamp):
        at.setdefault(str(state.type.value), state.timestamp.timestamp())
    pending, running = at.get("PENDING", float("nan")), at.get("RUNNING", float("nan"))
    return {
        "to_pending": pending - began,
        "pending_to_running": running - pending,
        "running_to_step": first - running,
    }


def _deployment(client: Any, name: str) -> Any:
    try:
        return client.read_deployment_by_name(name)
    except Exception:
        return None


def summary(label: str, rows: list[dict[str, float]]) -> float:
    first = sorted(r["first_step"] for r in rows)
    picked = sorted(r["picked_up"] for r in rows)
    median = statistics.median(first)
    print(
        f"  {label:<44} first step: median {median:6.2f}s  min {first[0]:5.2f}s  max "
        f"{first[-1]:5.2f}s   (picked up: median {statistics.median(picked):5.2f}s)"
    )
    parts = [
        f"{name} {statistics.median(r[key] for r in rows):.2f}s"
        for key, name in (
            ("to_pending", "trigger -> Pending (the poll)"),
            ("pending_to_running", "Pending -> Running (the run's process)"),
            ("running_to_step", "Running -> first step (the flow body)"),
        )
        if key in rows[0]
    ]
    print(f"  {'':<44} medians: " + ", ".join(parts))
    return median


@contextlib.contextmanager
def bench_folder() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="drctl-bench-trigger-", dir="/tmp"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-rounds", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--only", choices=["served", "worker"], default=None)
    parser.add_argument(
        "--keep-logs",
        type=Path,
        default=None,
        help="copy the server's, serve's and workers' logs (with each run's output) here",
    )
    args = parser.parse_args()

    with bench_folder() as where:
        home, logs = where / "home", where / "logs"
        home.mkdir()
        logs.mkdir()
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRCTL_"))}
        base.update(
            DRCTL_HOME=str(home),
            PREFECT_HOME=str(where / "prefect"),
            PREFECT_API_URL=api,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="false",
            PREFECT_LOGGING_LEVEL="INFO",
        )
        os.environ.update({k: v for k, v in base.items() if k.startswith(("PREFECT_", "DRCTL_"))})
        procs = Processes(logs)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
        try:
            served_def, drills = write_drill(where, home)
            print(f"prefect server on 127.0.0.1:{port} (SQLite in {where / 'prefect'})")
            procs.start(
                "server",
                [
                    str(BIN / "prefect"),
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                base,
                where,
            )
            wait_for("the Prefect server", lambda: _healthy(api), 180)
            results: dict[str, float] = {}

            # 1. served
            for label, poll, rounds in (
                ()
                if args.only == "worker"
                else (
                    (SERVED, None, args.rounds),
                    (SERVED_DEFAULT, "10", args.baseline_rounds),
                )
            ):
                if poll and args.no_baseline:
                    continue
                env = dict(base)
                if poll:
                    env["DRCTL_SERVE_POLL_SECONDS"] = poll
                serve = procs.start(
                    "serve", [str(BIN / "drctl"), "serve", str(served_def)], env, where
                )
                try:
                    rows = trigger_rounds(
                        home, {label: "drill/bench-serve-served"}, rounds, [serve]
                    )[label]
                except Exception:
                    print(procs.log("serve"))
                    raise
                finally:
                    procs.stop(serve)
                results[label] = summary(label, rows)

            # 2. a work pool and its worker
            if args.only == "served":
                report(results)
                return 0
            from flows.deployments import process_pool_template

            template = where / "pool-template.json"
            template.write_text(json.dumps(process_pool_template(str(BIN / "python"))))
            for pool, more in ((POOL, ["--base-job-template", str(template)]), (POOL_DEFAULT, [])):
                subprocess.run(
                    [str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process", *more],
                    env=base,
                    cwd=where,
                    check=True,
                    capture_output=True,
                )
            deploy_dir = where / "deploy"
            deploy_dir.mkdir()
            for name in ("bench-pool", "bench-plain", "bench-default"):
                subprocess.run(
                    [
                        str(BIN / "drctl"),
                        "deployments",
                        "prefect-yaml",
                        str(drills / f"{name}.yaml"),
                        "--output",
                        str(deploy_dir / "prefect.yaml"),
                    ],
                    env=base,
                    cwd=deploy_dir,
                    check=True,
                    capture_output=True,
                )
                deployed = subprocess.run(
                    [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
                    env=base,
                    cwd=deploy_dir,
                    capture_output=True,
                    text=True,
                )
                if deployed.returncode != 0:
                    raise RuntimeError(deployed.stdout + deployed.stderr)
            tuned = {"PREFECT_WORKER_QUERY_SECONDS": "0.5"}
            prefetch = ["--prefetch-seconds", "60"]
            # Side by side, taking turns: the tuned worker and the same with Prefect's template
            # (what the README said before); then Prefect's defaults alone (they share a pool).
            Variant = tuple[str, str, str, dict[str, str], list[str]]
            groups: list[list[Variant]] = [
                [(WORKER, "bench-pool", POOL, tuned, prefetch)]
                + (
                    []
                    if args.no_baseline
                    else [(WORKER_PLAIN, "bench-plain", POOL_DEFAULT, tuned, prefetch)]
                ),
                []
                if args.no_baseline
                else [(WORKER_DEFAULT, "bench-default", POOL_DEFAULT, {}, [])],
            ]
            for group in groups:
                if not group:
                    continue
                rounds = args.rounds if group[0][0] == WORKER else args.baseline_rounds
                workers = [
                    procs.start(
                        f"worker-{name}",
                        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type",
                         "process", *worker_args],
                        {**base, **extra},
                        where,
                    )
                    for _, name, pool, extra, worker_args in group
                ]  # fmt: skip
                try:
                    rows_of = trigger_rounds(
                        home, {label: f"drill/{name}" for label, name, *_ in group}, rounds, workers
                    )
                except Exception:
                    for _, name, *_ in group:
                        print(procs.log(f"worker-{name}"))
                    raise
                finally:
                    for worker in workers:
                        procs.stop(worker)
                for label, rows in rows_of.items():
                    results[label] = summary(label, rows)

            report(results)
        finally:
            procs.stop_all()
            if args.keep_logs is not None:
                shutil.copytree(logs, args.keep_logs, dirs_exist_ok=True)
    return 0


SERVED = "served, drctl serve (poll 0.5 s)"
SERVED_DEFAULT = "served, Prefect's default poll (10 s)"
WORKER = "worker (query 0.5 s, drctl's template)"
WORKER_PLAIN = "worker (query 0.5 s, Prefect's template)"
WORKER_DEFAULT = "worker, Prefect's defaults (query 10 s)"


def report(results: dict[str, float]) -> None:
    print()
    for label, target in ((SERVED, SERVED_TARGET), (WORKER, WORKER_TARGET)):
        if label in results:
            verdict = "PASS" if results[label] <= target else "FAIL"
            print(
                f"{verdict}: {label}: trigger -> first step, median {results[label]:.2f}s "
                f"(target <= {target:g}s)"
            )
    for tuned, default in (
        (SERVED, SERVED_DEFAULT),
        (WORKER, WORKER_PLAIN),
        (WORKER, WORKER_DEFAULT),
    ):
        if tuned in results and default in results:
            print(f"ratio {tuned} / {default}: {results[tuned] / results[default]:.2f}")


def _healthy(api: str) -> bool:
    try:
        return httpx.get(api + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
