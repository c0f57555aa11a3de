"""Benchmark: the planned switchover over SSH on the two-site lab, against the same operations run
by hand over SSH on the same two sites; and the round trip of one command on drctl's kept SSH
connection against OpenSSH's ControlMaster, on the same sshd.

Run it from the repository root, as root (the lab runs one sshd and one OS user per site)::

    .venv/bin/python bench/switchover_ssh.py [--rounds N] [--calls N]

It makes a throw-away ``DRCTL_HOME`` under /tmp, brings up the two-site lab there (site A on
127.0.0.2, site B on 127.0.0.3, each with its own sshd and OS user, PostgreSQL on the same port at
both, the HIS stand-in on 127.0.0.4), and always takes it down again and removes the directory,
on error and on Ctrl-C too. The OpenSSH ControlMaster it starts is stopped by its pid. Nothing
talks to any address outside 127.0.0.0/8.

1. Orchestrated: the shipped ``pg-switchover`` playbook on environment ``lab-ssh`` through the
   real Prefect flow; every command reaches the sites over SSH (``SshExecutor``), SQL goes to the
   servers over libpq, as always.
2. Hand-run floor over SSH: pg_ctl stop -m fast -W, then pg_ctl status polled; pg_controldata vs
   pg_last_wal_replay_lsn; pg_promote; a first write; CHECKPOINT; pg_rewind; postgresql.auto.conf
   and standby.signal written again; pg_ctl start -w; pg_stat_wal_receiver until streaming. Every
   command runs on its site as that site's user through the project's ``SshExecutor``, one kept
   connection per site opened before the clock starts, so both sides pay the same per-command
   transport (a session channel on a kept paramiko connection, the same wrapper); the SQL goes
   over one libpq session per server opened beforehand, as an operator's psql would be. Its write
   outage is measured by the runner's own write probe. Orchestrated and hand rounds alternate.
3. Round trip: ``true`` on a kept ``SshExecutor`` connection, against ``ssh -o ControlPath=...
   HOST true`` through a ControlMaster (``ssh -o ControlMaster=yes -o ControlPersist=...``) to
   the same sshd (site A's) as the same user, interleaved call by call. A few fresh ``ssh``
   connections are timed too, for scale.

Targets: switchover write outage over SSH at most 1.5x the hand-run's (medians); the kept
connection's round trip at most 10 ms (median) and no slower than ControlMaster's. Each prints
PASS or FAIL. The exit code is 0 whatever the figures are; it is non-zero only on errors.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from switchover import (
    SETTLE,
    BenchError,
    SwitchoverRound,
    _connect,
    _pg,
    _probe,
    _raise_interrupt,
    _wait,
    configure_environment,
    orchestrated_round,
    percentile,
    stop_prefect_server,
)

from drills.engine.loader import resolve_environment
from drills.engine.measures import analyse_write_outage
from drills.engine.roles import discover_roles
from drills.engine.targets import Targets
from drills.engines.postgres.actions import standby_config
from drills.executors.postgres import node_dsn
from drills.executors.ssh import SshExecutor
from drills.lab.twosite import ENVIRONMENT_NAME, TwoSiteLab, not_available_error
from drills.model.environment import Environment, Node, read_password
from drills.records.store import RecordStore

ROLES = ["primary", "standby"]
CALLS = 200  # round trips of each kind
FRESH_CONNECTIONS = 5  # plain `ssh HOST true`, each a new connection, for scale
CONTROL_PERSIST = "120"  # seconds; the master is stopped by the benchmark long before

TARGET_OUTAGE_RATIO = 1.5
TARGET_ROUNDTRIP_MS = 10.0


# ---------------------------------------------------------------------------------- hand-run


def _executor(name: str, node: Node) -> SshExecutor:
    if node.ssh is None:
        raise BenchError(f"node {name} is not reached over SSH")
    executor = SshExecutor(name, node.host, node.ssh)
    executor.run(["true"], timeout=30)  # connect now: the orchestrator connects before it acts
    return executor


def ssh_hand_round(index: int, env: Environment) -> SwitchoverRound:
    targets = Targets(env, {})
    try:
        roles = discover_roles(targets, ROLES).roles
    finally:
        targets.close()
    old_name, new_name = roles["primary"], roles["standby"]
    old, old_pg = _pg(env, old_name)
    new, new_pg = _pg(env, new_name)
    user = old_pg.os_user
    rewind_env: dict[str, str] = {}
    password = read_password(new_pg)
    if password is not None:
        rewind_env["PGPASSWORD"] = password
    source = node_dsn(new, application_name=old_pg.application_name or old_name)
    pg_ctl = [f"{old_pg.bin_dir}/pg_ctl"]
    data = ["-D", old_pg.data_dir]
    log_file = old_pg.log_file or f"{old_pg.data_dir.rstrip('/')}.log"
    auto_conf = f"{old_pg.data_dir}/postgresql.auto.conf"
    with _connect(old) as conn:
        conn.execute(
            "create table if not exists drctl.bench_write (n bigint, at timestamptz not null)"
        )

    run_id = f"bench-ssh-hand-{index}-{secrets.token_hex(3)}"
    phases: dict[str, float] = {}
    on_old = _executor(old_name, old)
    try:
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

                on_old.run([*pg_ctl, "stop", *data, "-m", "fast", "-W"], user=user, timeout=70)

                def stopped() -> bool:
                    status = on_old.run([*pg_ctl, "status", *data], user=user, check=False)
                    return status.returncode == 3

                _wait(f"{old_name} to stop", stopped)
                lap("stop")
                out = on_old.run(
                    [f"{old_pg.bin_dir}/pg_controldata", old_pg.data_dir], user=user, timeout=30
                ).stdout
                control = {
                    key.strip(): value.strip()
                    for key, _, value in (line.partition(":") for line in out.splitlines())
                }
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

                _wait(f"{new_name} replaying the shutdown checkpoint {checkpoint}", replayed)
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
                on_old.run(
                    [
                        f"{old_pg.bin_dir}/pg_rewind",
                        f"--target-pgdata={old_pg.data_dir}",
                        f"--source-server={source}",
                    ],
                    user=user,
                    env=rewind_env,
                    timeout=120,
                )
                lap("rewind")
                existing = on_old.read_file(auto_conf, user=user) or ""
                on_old.write_file(auto_conf, standby_config(existing, old.port, source), user=user)
                on_old.write_file(f"{old_pg.data_dir}/standby.signal", "", user=user)
                lap("reconfigure")
                on_old.run(
                    [*pg_ctl, "start", *data, "-l", log_file, "-w", "-t", "60"],
                    user=user,
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
    finally:
        on_old.close()
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


# ---------------------------------------------------------------------------------- round trip


@dataclass
class RoundTrips:
    kept_ms: list[float]
    control_master_ms: list[float]
    fresh_ms: list[float]
    kept_connect_ms: float
    master_connect_ms: float
    endpoint: str

    @property
    def kept(self) -> float:
        return statistics.median(self.kept_ms)

    @property
    def control_master(self) -> float:
        return statistics.median(self.control_master_ms)


class ControlMaster:
    """An OpenSSH master connection (``ControlMaster=yes``, ``ControlPersist``), stopped by pid."""

    def __init__(self, directory: Path, node: Node) -> None:
        assert node.ssh is not None
        access = node.ssh
        directory.mkdir(parents=True, exist_ok=True)
        self.path = str(directory / "%C")  # short: a socket path must stay under 108 bytes
        self.pid: int | None = None
        self.plain = [
            "ssh",
            *("-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"),
            *("-o", f"UserKnownHostsFile={access.known_hosts}", "-o", "IdentitiesOnly=yes"),
            *("-i", str(access.key_file), "-p", str(access.port), "-l", access.user),
        ]
        self.base = [*self.plain, "-o", f"ControlPath={self.path}"]
        self.host = access.address or node.host

    def start(self) -> float:
        started = time.monotonic()
        # With ControlPersist the master puts itself in the background once it is connected; it
        # must not hold our pipes (subprocess would wait for them), so its output goes nowhere.
        subprocess.run(
            [
                *self.base,
                *("-o", "ControlMaster=yes", "-o", f"ControlPersist={CONTROL_PERSIST}", "-N"),
                self.host,
            ],
            check=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.monotonic() - started
        check = subprocess.run(
            [*self.base, "-O", "check", self.host], capture_output=True, text=True, timeout=10
        )
        found = re.search(r"pid=(\d+)", check.stderr + check.stdout)
        if check.returncode != 0 or found is None:
            raise BenchError(f"the ControlMaster did not start: {check.stderr.strip()}")
        self.pid = int(found.group(1))
        return seconds

    def true(self) -> None:
        subprocess.run([*self.base, self.host, "true"], check=True, timeout=10, capture_output=True)

    def stop(self) -> None:
        if self.pid is None:
            return
        subprocess.run(
            [*self.base, "-O", "exit", self.host], capture_output=True, timeout=10, check=False
        )
        deadline = time.monotonic() + 5
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def round_trips(env: Environment, directory: Path, calls: int) -> RoundTrips:
    name = "pg1"
    node = env.nodes[name]
    assert node.ssh is not None
    endpoint = f"{node.ssh.user}@{node.ssh.address or node.host}:{node.ssh.port}"
    started = time.monotonic()
    kept = SshExecutor(name, node.host, node.ssh)
    master = ControlMaster(directory, node)
    try:
        kept.run(["true"], timeout=30)
        kept_connect = time.monotonic() - started
        master_connect = master.start()
        for _ in range(5):  # warm both: page cache, sshd's first sessions
            kept.run(["true"])
            master.true()
        kept_ms: list[float] = []
        master_ms: list[float] = []
        for _ in range(calls):
            t = time.perf_counter()
            kept.run(["true"])
            kept_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            master.true()
            master_ms.append((time.perf_counter() - t) * 1000)
        fresh_ms: list[float] = []
        fresh = [*master.plain, "-o", "ControlPath=none", master.host, "true"]
        for _ in range(FRESH_CONNECTIONS):
            t = time.perf_counter()
            subprocess.run(fresh, check=True, timeout=30, capture_output=True)
            fresh_ms.append((time.perf_counter() - t) * 1000)
    finally:
        master.stop()
        kept.close()
    return RoundTrips(
        kept_ms, master_ms, fresh_ms, kept_connect * 1000, master_connect * 1000, endpoint
    )


# ---------------------------------------------------------------------------------- report


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(
    orchestrated: list[SwitchoverRound],
    hand: list[SwitchoverRound],
    trips: RoundTrips | None,
    lab_line: str,
) -> None:
    targets: list[tuple[str, str, bool]] = []
    print()
    if orchestrated and hand:
        o_out = statistics.median(r.write_outage for r in orchestrated)
        h_out = statistics.median(r.write_outage for r in hand)
        o_whole = statistics.median(r.whole for r in orchestrated)
        h_whole = statistics.median(r.whole for r in hand)
        ratio = o_out / h_out if h_out > 0 else float("inf")
        print(f"drctl switchover over SSH: {len(orchestrated)} round(s) of each, alternating")
        print(f"  lab: {lab_line}")
        print()
        print(f"{'':26} {'write outage (s)':>17}   {'':24} {'whole switchover (s)':>20}")
        print(f"{'':26} {'median':>8}   {'per round':<34} {'median':>8}   per round")
        for label, rs, out, whole in (
            ("orchestrated (Prefect)", orchestrated, o_out, o_whole),
            ("hand-run over SSH", hand, h_out, h_whole),
        ):
            print(
                f"{label:26} {out:>8.3f}   {_fmt([r.write_outage for r in rs]):<34} "
                f"{whole:>8.3f}   {_fmt([r.whole for r in rs])}"
            )
        print(f"{'ratio orchestrated/hand':26} {ratio:>8.2f}   {'':34} {o_whole / h_whole:>8.2f}")
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
                f"  orchestrated idle time between steps, median "
                f"{statistics.median(gaps) * 1000:.1f} ms, max {max(gaps) * 1000:.1f} ms"
            )
        hand_phases = [p for p in hand[0].phases if p != "to_pg_ctl_start"]
        print(
            "  hand-run phases, median (s): "
            + ", ".join(
                f"{p} {statistics.median(r.phases[p] for r in hand):.3f}" for p in hand_phases
            )
        )
        targets.append(
            (
                f"SSH switchover write outage orchestrated/hand <= {TARGET_OUTAGE_RATIO:g}",
                f"{ratio:.2f}",
                ratio <= TARGET_OUTAGE_RATIO,
            )
        )
    if trips is not None:
        print()
        print(f"round trip of `true` on {trips.endpoint} (same sshd), {len(trips.kept_ms)} each:")
        for label, values, connect in (
            ("SshExecutor, kept connection", trips.kept_ms, trips.kept_connect_ms),
            ("ssh via ControlMaster", trips.control_master_ms, trips.master_connect_ms),
        ):
            print(
                f"  {label:30} median {statistics.median(values):6.2f} ms   "
                f"p10 {percentile(values, 10):6.2f}   p90 {percentile(values, 90):6.2f}   "
                f"(connecting took {connect:.0f} ms)"
            )
        fresh = statistics.median(trips.fresh_ms)
        print(
            f"  {'ssh, a new connection each':30} median {fresh:6.2f} ms"
            f"   ({len(trips.fresh_ms)} calls)"
        )
        print(f"  {'ratio kept/ControlMaster':30} {trips.kept / trips.control_master:6.2f}")
        targets.append(
            (
                f"kept-connection round trip <= {TARGET_ROUNDTRIP_MS:g} ms",
                f"{trips.kept:.2f} ms",
                trips.kept <= TARGET_ROUNDTRIP_MS,
            )
        )
        targets.append(
            (
                "kept-connection round trip <= ControlMaster's",
                f"{trips.kept:.2f} vs {trips.control_master:.2f} ms",
                trips.kept <= trips.control_master,
            )
        )
    print()
    print("targets")
    for what, value, ok in targets:
        print(f"  {what:58} {value:>18}  {_verdict(ok)}")


# ---------------------------------------------------------------------------------- main


def run(home: Path, rounds: int, calls: int) -> None:
    t = time.monotonic()
    print(f"DRCTL_HOME={home}: bringing up the two-site lab ...", flush=True)
    up = TwoSiteLab(home).up()
    lab_line = ", ".join(
        f"{n.name} {n.role} on {n.host}:{n.port} (sshd {n.host}:{n.sshd_port}, user {n.os_user})"
        for n in up.nodes
    )
    print(f"  lab up in {time.monotonic() - t:.1f}s ({lab_line})", flush=True)
    env = resolve_environment(ENVIRONMENT_NAME)
    store = RecordStore(home / "records", home / "locks")

    trips: RoundTrips | None = None
    if calls:
        print(f"round trips: {calls} of each, interleaved ...", flush=True)
        trips = round_trips(env, home / "cm", calls)

    orchestrated: list[SwitchoverRound] = []
    hand: list[SwitchoverRound] = []
    if rounds:
        print("warming up: Prefect ephemeral API and one throw-away round of each ...", flush=True)
        t = time.monotonic()
        orchestrated_round(0, store, ENVIRONMENT_NAME)
        ssh_hand_round(0, env)
        print(f"  warm-up done in {time.monotonic() - t:.1f}s", flush=True)
        for index in range(1, rounds + 1):
            o = orchestrated_round(index, store, ENVIRONMENT_NAME)
            orchestrated.append(o)
            h = ssh_hand_round(index, env)
            hand.append(h)
            print(
                f"  round {index}/{rounds}: orchestrated outage {o.write_outage:.3f}s whole "
                f"{o.whole:.3f}s; hand-run outage {h.write_outage:.3f}s whole {h.whole:.3f}s",
                flush=True,
            )
    report(orchestrated, hand, trips, lab_line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Switchover over SSH on the two-site lab vs the hand-run over SSH, and the "
        "round trip on a kept SSH connection vs OpenSSH ControlMaster (loopback only)."
    )
    parser.add_argument("--rounds", type=int, default=3, help="switchovers of each kind (3)")
    parser.add_argument(
        "--calls", type=int, default=CALLS, help=f"round trips of each kind ({CALLS}; 0: none)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 0 or args.calls < 0 or not (args.rounds or args.calls):
        parser.error("--rounds and --calls must not be negative, and not both 0")
    unavailable = not_available_error()
    if unavailable is not None:
        print(f"benchmark cannot run: {unavailable}", file=sys.stderr)
        return 2
    if shutil.which("ssh") is None:
        print("benchmark cannot run: the OpenSSH client (ssh) is not installed", file=sys.stderr)
        return 2

    home = Path(tempfile.mkdtemp(prefix="drctl-bench-", dir="/tmp"))
    home.chmod(0o755)  # the sites' users must reach their directories under it
    configure_environment(home)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    status = 0
    try:
        run(home, args.rounds, args.calls)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        status = 130
    except Exception:
        traceback.print_exc()
        print("benchmark failed: cleaning up", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for what, cleanup in (
            ("stopping the Prefect API", stop_prefect_server),
            ("taking the two-site lab down", lambda: TwoSiteLab(home).down()),
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
