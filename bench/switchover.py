"""Benchmark: an orchestrated PostgreSQL switchover against the hand-run floor, and the runner's
per-step overhead with and without Prefect.

Run it from the repository root::

    .venv/bin/python bench/switchover.py [--rounds N]

It makes a throw-away ``DRCTL_HOME`` under /tmp, brings up the local lab (two PostgreSQL servers
on 127.0.0.1), and always takes it down again and removes the directory, on error and on Ctrl-C
too. Nothing talks to any address but 127.0.0.1.

1. Orchestrated: the shipped ``pg-switchover`` playbook through the real Prefect flow
   (``flows.drill.run_drill``); the write outage and the step times come from its drill record.
2. Hand-run floor: the same operations with no orchestrator (pg_ctl stop, pg_controldata vs
   pg_last_wal_replay_lsn, pg_promote, first write, CHECKPOINT, pg_rewind, reconfigure, pg_ctl
   start, wait for streaming), its write outage measured by the same write probe the runner uses.
   The two alternate round by round so machine noise hits both.
3. Runner overhead: a 50-step playbook of ``observe`` steps on a node with no database, once
   through the Prefect flow and once with the direct invoker, in the same process.

Targets: the orchestrated write outage at most 1.25x the hand-run's (medians), and Prefect's
per-step overhead under 50 ms. Each prints PASS or FAIL. The exit code is 0 whatever the figures
are (it is a benchmark); it is non-zero only on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg import conninfo

# drills imports no Prefect: safe before the environment below is set. flows.drill (which does)
# is imported only after ``configure_environment``.
from drills.engine.loader import resolve_environment
from drills.engine.measures import analyse_write_outage
from drills.engine.roles import discover_roles
from drills.engine.runner import Runner, RunRequest
from drills.engine.targets import Targets
from drills.engines.postgres.actions import standby_config
from drills.engines.postgres.canary import PostgresInstruments, WriteProbe, writer_dsn
from drills.executors.local import LocalExecutor
from drills.executors.postgres import node_dsn
from drills.lab.onehost import Lab
from drills.model.clock import Clock
from drills.model.environment import Environment, Node, PostgresAccess, read_password
from drills.model.record import Record
from drills.records.store import RecordStore

PLAYBOOK = "pg-switchover"
ENVIRONMENT = "lab"
ROLES = ["primary", "standby"]
POLL = 0.005  # seconds between polls in the hand-run (as fine as the playbook's checks)
HAND_STOP_MODES = {
    "wait": "pg_ctl stop -m fast -w (pg_ctl checks every 100 ms whether the server is gone)",
    "poll": "pg_ctl stop -m fast -W, then pg_ctl status every 5 ms (as the playbook polls)",
}
HAND_TIMEOUT = 60.0  # seconds for any one wait of the hand-run
SETTLE = 5.0  # seconds to wait for a probe write on the new primary before stopping it
OVERHEAD_STEPS = 50

TARGET_OUTAGE_RATIO = 1.25
TARGET_PREFECT_STEP_MS = 50.0


class BenchError(Exception):
    """A benchmark round could not be measured: the run failed or a wait timed out."""


# ---------------------------------------------------------------------------------- results


@dataclass
class SwitchoverRound:
    kind: str  # "orchestrated" or "hand"
    index: int
    old_primary: str
    new_primary: str
    write_outage: float
    whole: float  # first step started -> last step ended (hand: the standby streams again)
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    gaps: list[float] = field(default_factory=list)  # orchestrated: idle time between steps
    record_id: str = ""
    probe_failures: int = 0


@dataclass
class Overhead:
    invoker: str
    record_id: str
    deltas_ms: list[float]
    run_seconds: float

    @property
    def median(self) -> float:
        return statistics.median(self.deltas_ms)

    @property
    def p95(self) -> float:
        return percentile(self.deltas_ms, 95)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------------------------- setup


def configure_environment(home: Path) -> None:
    """DRCTL_HOME and Prefect settings; must run before Prefect is imported."""
    os.environ["DRCTL_HOME"] = str(home)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # loopback only
    # The benchmark measures the ephemeral API it starts itself, never a configured server.
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("PREFECT_PROFILE", None)
    os.environ.pop("PREFECT_PROFILES_PATH", None)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_prefect_server() -> None:
    """Stop the ephemeral API subprocess now (it would only stop at exit, after the rmtree)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    servers = list(SubprocessASGIServer._instances.values())
    if not any(s.server_process is not None for s in servers):
        return
    # Deliver the client's pending events and logs, and give the server a moment to persist
    # them: a server terminated mid-flush prints a CancelledError traceback for each batch.
    for worker in (EventsWorker, APILogWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=5)
    time.sleep(1.0)
    for server in servers:
        server.stop()


# ---------------------------------------------------------------------------------- orchestrated


def load_passed(store: RecordStore, run_id: str) -> Record:
    record = store.load(run_id)
    if record.status != "passed":
        raise BenchError(f"run {run_id} ended {record.status}: {record.reason}")
    return record


def orchestrated_round(
    index: int, store: RecordStore, environment: str = ENVIRONMENT
) -> SwitchoverRound:
    from flows.drill import run_drill

    run_id = run_drill(RunRequest(playbook=PLAYBOOK, environment=environment))
    record = load_passed(store, run_id)
    main = [s for s in record.steps if s.phase == "main"]
    if not main:
        raise BenchError(f"run {run_id} has no main steps")
    outage = record.measurements.write_outage_seconds
    if outage is None:
        note = record.measurements.write_probe.note if record.measurements.write_probe else ""
        raise BenchError(f"run {run_id} measured no write outage ({note or 'no probe'})")
    gaps = [b.offsets.started - a.offsets.ended for a, b in itertools.pairwise(main)]
    probe = record.measurements.write_probe
    return SwitchoverRound(
        kind="orchestrated",
        index=index,
        old_primary=record.roles.get("primary", "?"),
        new_primary=record.roles.get("standby", "?"),
        write_outage=outage,
        whole=main[-1].offsets.ended - main[0].offsets.started,
        phases={s.id: s.duration_seconds for s in main},
        gaps=gaps,
        record_id=run_id,
        probe_failures=probe.failures if probe else 0,
    )


# ---------------------------------------------------------------------------------- hand-run


def _wait(what: str, predicate: Callable[[], bool], timeout: float = HAND_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"hand-run: {what} did not happen within {timeout:g}s")
        time.sleep(POLL)


def _pg(env: Environment, name: str) -> tuple[Node, PostgresAccess]:
    node = env.nodes[name]
    if node.postgres is None:
        raise BenchError(f"node {name} has no postgres section")
    return node, node.postgres


def _connect(node: Node) -> psycopg.Connection[Any]:
    return psycopg.connect(node_dsn(node, with_password=True), autocommit=True)


def _controldata(local: LocalExecutor, pg: PostgresAccess) -> dict[str, str]:
    out = local.run(
        [f"{pg.bin_dir}/pg_controldata", pg.data_dir], user=pg.os_user, timeout=30
    ).stdout
    return {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in out.splitlines())
    }


@contextlib.contextmanager
def _probe(env: Environment, nodes: list[str], run_id: str) -> Iterator[tuple[Any, Clock]]:
    PostgresInstruments().prepare(env, nodes)
    dsn, ports = writer_dsn(env, nodes)
    clock = Clock()
    probe = WriteProbe(dsn, ports, run_id, clock, 0.01)  # the playbook's default interval
    probe.start()
    try:
        yield probe, clock
    finally:
        probe.stop()


def hand_round(index: int, stop_mode: str) -> SwitchoverRound:
    env = resolve_environment(ENVIRONMENT)
    targets = Targets(env, {})
    try:
        roles = discover_roles(targets, ROLES).roles
    finally:
        targets.close()
    old_name, new_name = roles["primary"], roles["standby"]
    old, old_pg = _pg(env, old_name)
    new, new_pg = _pg(env, new_name)
    local = LocalExecutor(old_name)
    rewind_env: dict[str, str] = {}
    password = read_password(new_pg)
    if password is not None:
        rewind_env["PGPASSWORD"] = password
    source = node_dsn(new)
    primary_conninfo = conninfo.make_conninfo(
        "", host=new.host, port=str(new.port), user=new_pg.user, application_name=old_name
    )
    pg_ctl = [f"{old_pg.bin_dir}/pg_ctl", "-D", old_pg.data_dir]
    log_file = old_pg.log_file or f"{old_pg.data_dir.rstrip('/')}.log"
    with _connect(old) as conn:
        conn.execute(
            "create table if not exists drctl.bench_write (n bigint, at timestamptz not null)"
        )

    run_id = f"bench-hand-{index}-{secrets.token_hex(3)}"
    phases: dict[str, float] = {}
    with _probe(env, [old_name, new_name], run_id) as (probe, clock):
        _wait("a first probe write", lambda: bool(probe.log.acks), 5.0)
        standby = _connect(new)  # opened beforehand, as an operator's psql session would be
        try:
            t0 = mark = time.monotonic()

            def lap(name: str) -> None:
                nonlocal mark
                now = time.monotonic()
                phases[name] = now - mark
                mark = now

            if stop_mode == "wait":
                local.run(
                    [*pg_ctl, "stop", "-m", "fast", "-w", "-t", "60"],
                    user=old_pg.os_user,
                    timeout=70,
                )
            else:  # as the playbook does: no wait, then poll pg_ctl status (exit 3: not running)
                local.run([*pg_ctl, "stop", "-m", "fast", "-W"], user=old_pg.os_user, timeout=70)

                def stopped() -> bool:
                    status = local.run(
                        [*pg_ctl, "status"], user=old_pg.os_user, timeout=10, check=False
                    )
                    return status.returncode == 3

                _wait(f"{old_name} to stop", stopped)
            lap("stop")
            control = _controldata(local, old_pg)
            if control.get("Database cluster state") != "shut down":
                raise BenchError(
                    f"hand-run: {old_name} is {control.get('Database cluster state')!r} "
                    "after pg_ctl stop"
                )
            checkpoint = control["Latest checkpoint location"]

            def replayed() -> bool:
                row = standby.execute(
                    "select pg_last_wal_replay_lsn() > %s::pg_lsn", (checkpoint,)
                ).fetchone()
                return bool(row and row[0])

            _wait(f"{new_name} replaying {old_name}'s shutdown checkpoint {checkpoint}", replayed)
            lap("confirm")
            standby.execute("select pg_promote(wait => false)")

            def promoted() -> bool:
                row = standby.execute("select pg_is_in_recovery()").fetchone()
                return row is not None and not row[0]

            _wait(f"{new_name} leaving recovery", promoted)
            lap("promote")
            standby.execute(
                "insert into drctl.bench_write values (%s, clock_timestamp())", (index,)
            )
            lap("first_write")
            standby.execute("checkpoint")
            lap("checkpoint")
            local.run(
                [
                    f"{old_pg.bin_dir}/pg_rewind",
                    f"--target-pgdata={old_pg.data_dir}",
                    f"--source-server={source}",
                ],
                user=old_pg.os_user,
                env=rewind_env,
                timeout=120,
            )
            lap("rewind")
            auto_conf = f"{old_pg.data_dir}/postgresql.auto.conf"
            existing = local.run(["cat", auto_conf], user=old_pg.os_user, timeout=10).stdout
            local.run(
                ["sh", "-c", 'cat > "$1"', "sh", auto_conf],
                user=old_pg.os_user,
                timeout=10,
                input=standby_config(existing, old.port, primary_conninfo),
            )
            local.run(
                ["touch", f"{old_pg.data_dir}/standby.signal"], user=old_pg.os_user, timeout=10
            )
            lap("reconfigure")
            local.run(
                [*pg_ctl, "start", "-l", log_file, "-w", "-t", "60"],
                user=old_pg.os_user,
                timeout=70,
            )
            lap("start")
            to_start = time.monotonic() - t0
            with _connect(old) as rejoined:

                def streams() -> bool:
                    row = rejoined.execute("select status from pg_stat_wal_receiver").fetchone()
                    return row is not None and row[0] == "streaming"

                _wait(f"{old_name} streaming from {new_name}", streams)
            lap("streaming")
            whole = time.monotonic() - t0
        finally:
            standby.close()
        done = clock.now().offset
        _wait(
            f"a probe write on {new_name}",
            lambda: any(a.node == new_name and a.offset > done for a in probe.log.acks[-3:]),
            SETTLE,
        )
    outage = analyse_write_outage(probe.log, clock.now().offset)
    if outage.seconds is None:
        raise BenchError(f"hand-run: the probe measured no write outage ({outage.note})")
    phases["to_pg_ctl_start"] = to_start
    return SwitchoverRound(
        kind="hand",
        index=index,
        old_primary=old_name,
        new_primary=new_name,
        write_outage=outage.seconds,
        whole=whole,
        phases=phases,
        probe_failures=outage.failures,
    )


# ---------------------------------------------------------------------------------- overhead


def write_overhead_files(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    environment = directory / "bench-overhead-env.yaml"
    environment.write_text(
        "name: bench-overhead\n"
        "description: One node with no database, for the runner overhead benchmark.\n"
        "protected: false\n"
        "nodes:\n"
        "  app1:\n"
        "    role: local\n"
        "    host: 127.0.0.1\n"
        "    executor: local\n"
    )
    steps = "".join(
        f"  - id: step_{n:02d}\n    action: observe\n    target: local\n"
        for n in range(1, OVERHEAD_STEPS + 1)
    )
    playbook = directory / "bench-overhead.yaml"
    playbook.write_text(
        "name: bench-overhead\n"
        "version: 1\n"
        "kind: inspection\n"
        "title: {en: Runner overhead benchmark, zh: 编排开销基准}\n"
        "roles: [local]\n"
        f"steps:\n{steps}"
    )
    return environment, playbook


def overhead_run(invoker: str, environment: Path, playbook: Path, store: RecordStore) -> Overhead:
    request = RunRequest(playbook=str(playbook), environment=str(environment))
    started = time.monotonic()
    if invoker == "prefect":
        from flows.drill import run_drill

        run_id = run_drill(request)
    else:
        run_id = Runner(request).run().id
    seconds = time.monotonic() - started
    record = load_passed(store, run_id)
    starts = [s.offsets.started for s in record.steps if s.phase == "main"]
    if len(starts) != OVERHEAD_STEPS:
        raise BenchError(f"run {run_id} has {len(starts)} steps, not {OVERHEAD_STEPS}")
    deltas = [(b - a) * 1000 for a, b in itertools.pairwise(starts)]
    return Overhead(invoker, run_id, deltas, seconds)


# ---------------------------------------------------------------------------------- report


def _fmt(values: list[float], digits: int = 3) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(
    rounds: int,
    orchestrated: list[SwitchoverRound],
    hand: list[SwitchoverRound],
    prefect: Overhead,
    direct: Overhead,
    lab_line: str,
    warmup_seconds: float,
    hand_stop: str,
) -> None:
    o_out = statistics.median(r.write_outage for r in orchestrated)
    h_out = statistics.median(r.write_outage for r in hand)
    o_whole = statistics.median(r.whole for r in orchestrated)
    h_whole = statistics.median(r.whole for r in hand)
    h_to_start = statistics.median(r.phases["to_pg_ctl_start"] for r in hand)
    out_ratio = o_out / h_out if h_out > 0 else math.inf
    whole_ratio = o_whole / h_whole if h_whole > 0 else math.inf

    print()
    print(f"drctl switchover benchmark: {rounds} round(s) of each, alternating")
    print(f"  lab: {lab_line}")
    print(f"  hand-run stop: {HAND_STOP_MODES[hand_stop]}")
    print(f"  Prefect warm-up (ephemeral API start + one throw-away round): {warmup_seconds:.1f}s")
    print()
    header = f"{'':24} {'write outage (s)':>17}   {'':28} {'whole switchover (s)':>20}"
    print(header)
    print(f"{'':24} {'median':>8}   {'per round':<36} {'median':>8}   per round")
    for label, rs, out, whole in (
        ("orchestrated (Prefect)", orchestrated, o_out, o_whole),
        ("hand-run floor", hand, h_out, h_whole),
    ):
        print(
            f"{label:24} {out:>8.3f}   {_fmt([r.write_outage for r in rs]):<36} "
            f"{whole:>8.3f}   {_fmt([r.whole for r in rs])}"
        )
    print(f"{'ratio orchestrated/hand':24} {out_ratio:>8.2f}   {'':36} {whole_ratio:>8.2f}")
    print()
    print("  whole switchover = first step started -> last step ended; the playbook's last step")
    print("  ends when the rejoined standby streams, so the hand-run's time runs to 'streaming'")
    print(f"  too (hand-run to the return of pg_ctl start: median {h_to_start:.3f}s).")
    print()
    print("  per round:")
    for r in sorted(orchestrated + hand, key=lambda r: (r.index, r.kind != "orchestrated")):
        extra = f"record {r.record_id}" if r.record_id else "no orchestrator"
        print(
            f"    #{r.index} {r.kind:<12} {r.old_primary} -> {r.new_primary}  "
            f"outage {r.write_outage:.3f}s  whole {r.whole:.3f}s  "
            f"probe failures {r.probe_failures:>3}  ({extra})"
        )
    print()
    step_ids = list(orchestrated[0].phases)
    print(
        "  orchestrated step durations, median (s): "
        + ", ".join(
            f"{sid} {statistics.median(r.phases[sid] for r in orchestrated):.3f}"
            for sid in step_ids
        )
    )
    gaps = [g for r in orchestrated for g in r.gaps]
    if gaps:
        print(
            f"  orchestrated idle time between steps (task hand-offs), median "
            f"{statistics.median(gaps) * 1000:.1f} ms, max {max(gaps) * 1000:.1f} ms"
        )
    hand_phases = [p for p in hand[0].phases if p != "to_pg_ctl_start"]
    print(
        "  hand-run phases, median (s): "
        + ", ".join(f"{p} {statistics.median(r.phases[p] for r in hand):.3f}" for p in hand_phases)
    )
    print()
    print(
        f"runner overhead: {OVERHEAD_STEPS} observe steps, no checks; step N+1 start - step N start"
    )
    for o in (prefect, direct):
        label = "Prefect flow (run_drill)" if o.invoker == "prefect" else "direct invoker"
        print(
            f"  {label:26} median {o.median:7.2f} ms   p95 {o.p95:7.2f} ms   "
            f"(run {o.run_seconds:.2f}s, record {o.record_id})"
        )
    print(
        f"  {'Prefect - direct':26} median {prefect.median - direct.median:7.2f} ms   "
        f"p95 {prefect.p95 - direct.p95:7.2f} ms"
    )
    print()
    print("targets")
    print(
        f"  write outage ratio orchestrated/hand <= {TARGET_OUTAGE_RATIO:g}   "
        f"{out_ratio:6.2f}     {_verdict(out_ratio <= TARGET_OUTAGE_RATIO)}"
    )
    print(
        f"  Prefect median per step < {TARGET_PREFECT_STEP_MS:g} ms       "
        f"{prefect.median:6.2f} ms  {_verdict(prefect.median < TARGET_PREFECT_STEP_MS)}"
    )


# ---------------------------------------------------------------------------------- main


def run(home: Path, rounds: int, hand_stop: str) -> None:
    t = time.monotonic()
    print(f"DRCTL_HOME={home}: bringing up the lab ...", flush=True)
    up = Lab(home).up()
    lab_line = ", ".join(f"{n.name} {n.role} on {n.host}:{n.port}" for n in up.nodes)
    print(f"  lab up in {time.monotonic() - t:.1f}s ({lab_line})", flush=True)
    store = RecordStore(home / "records", home / "locks")

    print("warming up: Prefect ephemeral API and one throw-away orchestrated round ...", flush=True)
    t = time.monotonic()
    orchestrated_round(0, store)
    warmup = time.monotonic() - t
    hand_round(0, hand_stop)  # and one throw-away hand-run: page cache, imports, connections
    print(f"  warm-up done ({warmup:.1f}s for the Prefect round)", flush=True)

    orchestrated: list[SwitchoverRound] = []
    hand: list[SwitchoverRound] = []
    for index in range(1, rounds + 1):
        o = orchestrated_round(index, store)
        orchestrated.append(o)
        print(
            f"  round {index}/{rounds} orchestrated: outage {o.write_outage:.3f}s, "
            f"whole {o.whole:.3f}s",
            flush=True,
        )
        h = hand_round(index, hand_stop)
        hand.append(h)
        print(
            f"  round {index}/{rounds} hand-run:     outage {h.write_outage:.3f}s, "
            f"whole {h.whole:.3f}s",
            flush=True,
        )

    print("runner overhead: Prefect flow, then direct invoker ...", flush=True)
    environment, playbook = write_overhead_files(home / "bench")
    prefect = overhead_run("prefect", environment, playbook, store)
    direct = overhead_run("direct", environment, playbook, store)
    report(rounds, orchestrated, hand, prefect, direct, lab_line, warmup, hand_stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Orchestrated PostgreSQL switchover vs the hand-run floor, and the "
        "runner's per-step overhead with and without Prefect (loopback only)."
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="switchovers of each kind (default 3)"
    )
    parser.add_argument(
        "--hand-stop",
        choices=sorted(HAND_STOP_MODES),
        default="poll",
        help="how the hand-run stops the primary: "
        + "; ".join(f"{k}: {v}" for k, v in HAND_STOP_MODES.items()),
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    home = Path(tempfile.mkdtemp(prefix="drctl-bench-", dir="/tmp"))
    home.chmod(0o755)  # as root the lab's PostgreSQL runs as drctl-pg, which must reach it
    configure_environment(home)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    status = 0
    try:
        run(home, args.rounds, args.hand_stop)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        status = 130
    except Exception:
        traceback.print_exc()
        print("benchmark failed: cleaning up", file=sys.stderr)
        status = 1
    finally:
        # A second Ctrl-C must not leave servers behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for what, cleanup in (
            ("stopping the Prefect API", stop_prefect_server),
            ("taking the lab down", lambda: Lab(home).down()),
        ):
            try:
                cleanup()
            except Exception as exc:
                print(f"{what} failed: {exc}", file=sys.stderr)
                status = status or 1
        shutil.rmtree(home, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return status


if __name__ == "__main__":
    sys.exit(main())
