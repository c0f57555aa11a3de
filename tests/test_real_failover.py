"""A real failover starts from the state the site is in (issue 10, section 1).

The fencing decision table is tested on its own (``decide_fence``), and with it the models it
needs (a node's site fence command, preconditions by mode) and ``pg.down`` counting every
process of an instance. Then `pg-failover --mode real` runs on the session's labs from each state
a primary can be in when the on-call engineer starts it: killed (its postmaster and every child,
``kill -9``, before the run), still alive (to be abandoned), and, at the two-site lab, with its
host's sshd gone (its host executor cannot be reached): refused without a fence confirmation,
run with the override (recorded), and run with a site fence command named in the environment.

Each run is checked for the roles after it, its record (steps, fence decisions, override) and
that nothing lost went uncounted: an outside writer's acknowledged rows are each on the new
primary or counted in the record (or the record says its count is only a lower bound). The lab
is a healthy streaming pair again after each test: the playbook's own rejoin step, or drctl's
``pg.rejoin_as_standby`` when the playbook could not (its host was lost).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from pydantic import ValidationError

from drills.engine.runner import Runner, RunRequest
from drills.engines.postgres.fence import FenceFacts, decide_fence
from drills.model.environment import Environment
from drills.model.playbook import Mode, Playbook
from drills.model.record import Record
from tests import test_runner_decisions as fakes
from tests.helpers import alive, kill_tree, wait_until
from tests.labs import AnyLab

# -- the decision table, on its own ---------------------------------------------------------------


def facts(**given: Any) -> FenceFacts:
    return FenceFacts("pg1", **given)


@pytest.mark.parametrize(
    ("given", "decision", "words"),
    [
        (
            {"state": "running", "members": (10, 11), "port": "accepts writes"},
            "stop",
            ["pg1 is alive", "pg_ctl stop -m immediate", "accepts writes"],
        ),
        (
            {"state": "running", "members": (10, 11), "stop_tried": True},
            "kill",
            ["pg_ctl stop did not stop pg1", "SIGKILL its postmaster", "pids 10, 11"],
        ),
        (
            {"state": "dead, not yet reaped", "members": (11, 12)},
            "kill",
            ["postmaster is gone", "2 process(es)", "can still commit", "SIGKILL them"],
        ),
        ({"state": "not running"}, "fenced", ["pg1 is fenced", "no process of its instance"]),
        (
            {"state": "not running", "port": "accepts writes"},
            "unconfirmed",
            ["yet its port answers (accepts writes)", "cannot be confirmed"],
        ),
        (
            {"data_dir_seen": False, "port": "no connection"},
            "unconfirmed",
            ["data directory cannot be seen", "cannot be confirmed"],
        ),
        (
            {"host_error": "connection refused"},
            "unconfirmed",
            ["host cannot be reached (connection refused)", "names no fence command"],
        ),
        (
            {"host_error": "connection refused", "fence_command": "`ipmi off` on local"},
            "site_fence",
            ["run the site's fence command (`ipmi off` on local)"],
        ),
        (
            {
                "host_error": "connection refused",
                "fence_command": "`ipmi off` on local",
                "site_fenced": "`ipmi off` on local exited 0 at 2026-12-01T00:00:00.000Z",
            },
            "fenced",
            ["pg1 is fenced: its host cannot be reached", "exited 0"],
        ),
        (
            {
                "host_error": "connection refused",
                "fence_command": "`ipmi off` on local",
                "site_fence_failed": "`ipmi off` on local exited 1",
            },
            "unconfirmed",
            ["did not confirm the fence (`ipmi off` on local exited 1)"],
        ),
    ],
)
def test_the_fence_decision_table(given: dict[str, Any], decision: str, words: list[str]) -> None:
    decided = decide_fence(facts(**given))
    assert decided.decision == decision
    for word in words:
        assert word in decided.sentence, (word, decided.sentence)


def test_an_unreachable_host_is_never_fenced_by_its_closed_port() -> None:
    """A closed port after a lost host proves nothing: its backends may still commit."""
    for port in ("no connection", "accepts writes", "read-only"):
        assert decide_fence(facts(host_error="timed out", port=port)).decision == "unconfirmed"


def test_every_zh_sentence_of_the_fence_is_translated() -> None:
    from drills.reports.phrases import Phrasebook

    book = Phrasebook("zh")
    rows = [
        {"state": "running", "members": (1,), "port": "accepts writes"},
        {"state": "running", "members": (1,), "stop_tried": True},
        {"state": "dead, not yet reaped", "members": (2,)},
        {"state": "not running"},
        {"state": "not running", "port": "read-only"},
        {"data_dir_seen": False},
        {"host_error": "connection refused"},
        {"host_error": "x", "fence_command": "`a b` on local"},
        {"host_error": "x", "fence_command": "`a` on mgmt", "site_fenced": "`a` on mgmt exited 0"},
        {"host_error": "x", "fence_command": "`a`", "site_fence_failed": "`a` on local exited 2"},
    ]
    for given in rows:
        f = facts(**given)
        said = book.sentence(decide_fence(f).sentence)
        assert not getattr(said, "unknown", []), (given, said)
        observed = book.observed(f.summary())
        assert not getattr(observed, "unknown", []), (given, observed)


# -- the models ---------------------------------------------------------------------------------


def env_with_fence(fence: dict[str, Any]) -> dict[str, Any]:
    pg = {"data_dir": "/d", "bin_dir": "/b"}
    return {
        "name": "site",
        "nodes": {
            "db1": {"role": "primary", "host": "127.0.0.2", "postgres": pg, "fence": fence},
            "db2": {"role": "standby", "host": "127.0.0.3", "postgres": pg},
            "mgmt": {"role": "mgmt", "host": "127.0.0.5"},
        },
    }


def test_a_node_names_its_site_fence_command() -> None:
    env = Environment.model_validate(
        env_with_fence({"command": ["fence_ipmilan", "-o", "off"], "on": "mgmt", "timeout": 30})
    )
    fence = env.nodes["db1"].fence
    assert fence is not None and fence.on == "mgmt" and fence.command[0] == "fence_ipmilan"
    assert (
        Environment.model_validate(env_with_fence({"command": ["true"]})).nodes["db1"].fence.on
        == "local"
    )  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fence", "message"),
    [
        ({"command": ["x"], "on": "db1"}, "cannot run on db1 itself"),
        ({"command": ["x"], "on": "nowhere"}, "names no node of the environment"),
        ({"command": []}, "at least 1"),
    ],
)
def test_a_fence_command_that_cannot_work_is_refused(fence: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Environment.model_validate(env_with_fence(fence))


def test_a_precondition_may_hold_in_some_modes_only() -> None:
    body = {
        "name": "p",
        "version": 1,
        "kind": "failover",
        "title": {"en": "P", "zh": "P"},
        "roles": ["primary"],
        "preconditions": [
            {"check": "pg.is_primary", "target": "primary", "modes": ["drill"]},
            {"check": "pg.is_standby", "target": "standby"},
        ],
        "steps": [{"id": "s", "action": "observe", "target": "primary"}],
    }
    playbook = Playbook.model_validate(body)
    assert playbook.preconditions[0].modes == [Mode.drill]
    assert playbook.preconditions[1].modes == [Mode.drill, Mode.real]
    shipped = Playbook.model_validate(
        yaml.safe_load((Path(__file__).parent.parent / "playbooks/pg-failover.yaml").read_text())
    )
    real = [p.check for p in shipped.preconditions if Mode.real in p.modes]
    assert real == ["pg.is_standby"]  # a real failover does not need the old primary up


def test_the_runner_asks_only_the_preconditions_of_the_runs_mode(tmp_path: Path) -> None:
    """The primary is down: a drill refuses (its precondition wants it up); a real run, whose
    playbook does not ask that in real mode, goes on."""
    steps = [fakes.command("look", "true", target="standby")]
    gate = {
        "preconditions": [{"check": "fake.is_primary", "target": "primary", "modes": ["drill"]}]
    }
    world = fakes.World({"db1": "down", "db2": "standby"})
    for mode in ("drill", "real"):
        (tmp_path / mode).mkdir()
    drill = fakes.run(tmp_path / "drill", world, steps, playbook=gate)
    assert drill.status == "aborted" and "precondition fake.is_primary" in drill.reason
    assert [c.check for c in drill.preconditions] == ["fake.is_primary"]
    real = fakes.run(tmp_path / "real", world, steps, playbook=gate, request={"mode": "real"})
    assert real.status == "passed", real.reason
    assert real.preconditions == [] and [s.id for s in real.steps] == ["look"]


def test_pg_down_counts_every_process_of_the_instance() -> None:
    """A postmaster gone with its backends left is not down: they can still commit."""
    from drills.executors.host import InstanceProcesses, ProcessInfo
    from verify.postgres import NoParams, down

    @dataclass
    class Host:
        members: tuple[ProcessInfo, ...]

        def read_file(self, path: str, *, user: str | None = None) -> str | None:
            return None  # no postmaster.pid: the postmaster is gone

        def instance_processes(self, data_dir: str, *, user: str | None = None) -> Any:
            return InstanceProcesses(data_dir, None, None, self.members)

    @dataclass
    class Probe:
        host_: Host
        env: Any = None
        calls: list[str] = field(default_factory=list)

        def postgres(self, role: str) -> Any:
            return "pg1", None, type("Pg", (), {"data_dir": "/d"})()

        def host(self, role: str) -> Host:
            return self.host_

        def os_user(self, role: str) -> None:
            return None

    orphans = Probe(Host((ProcessInfo(41, "S", "postgres"), ProcessInfo(42, "R", "postgres"))))
    seen = down(orphans, "primary", NoParams())  # type: ignore[arg-type]
    assert not seen.held
    assert seen.observed == "not running; 2 process(es) of its instance left (pids 41, 42)"
    gone = down(Probe(Host(())), "primary", NoParams())  # type: ignore[arg-type]
    assert gone.held and gone.observed == "not running"


# -- the labs: helpers ---------------------------------------------------------------------------

REJOIN = {
    "name": "rejoin-old-primary",
    "version": 1,
    "kind": "failover",
    "title": {"en": "Rejoin", "zh": "重新加入"},
    "roles": ["primary", "standby"],
    "steps": [
        {
            "id": "rejoin",
            "action": "pg.rejoin_as_standby",
            "target": "standby",
            "with": {"source": "primary"},
            "timeout": "120s",
            "verify": [
                {"check": "pg.is_standby"},
                {"check": "pg.streaming", "with": {"source": "primary"}},
            ],
            "within": "60s",
        }
    ],
}


START = {
    "name": "restart-old-primary",
    "version": 1,
    "kind": "failover",
    "title": {"en": "Restart", "zh": "重新启动"},
    "roles": ["primary", "standby"],
    "steps": [
        {
            "id": "start",
            "action": "pg.start",
            "target": "primary",
            "timeout": "60s",
            "verify": [{"check": "pg.is_primary"}],
            "within": "30s",
        }
    ],
}


def instance_pids(data_dir: str) -> list[int]:
    """Live processes working in ``data_dir``: a postmaster and its children, orphans too."""
    real = os.path.realpath(data_dir)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == real and alive(int(entry)):
            found.append(int(entry))
    return found


def kill_instance(data_dir: str) -> list[int]:
    """``kill -9`` of a postmaster and every child, as the host's root would: the primary is
    dead before the run starts."""
    killed: list[int] = []
    deadline = time.monotonic() + 10
    while pids := instance_pids(data_dir):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed += [p for p in pids if p not in killed]
        assert time.monotonic() < deadline, f"processes {pids} of {data_dir} did not die"
        time.sleep(0.02)
    return killed


def data_dir(lab: AnyLab, node: str) -> str:
    pg = lab.node(node).postgres
    assert pg is not None
    return pg.data_dir


@dataclass
class OutsideWriter:
    """Our own psycopg connection to the primary: rows, each its own transaction, counted as
    acknowledged when the commit returned."""

    lab: AnyLab
    table: str = "public.outside_writes"
    acked: list[int] = field(default_factory=list)
    base: int = field(default_factory=lambda: int(time.time() * 1000) * 1000)

    def prepare(self, node: str) -> None:
        with psycopg.connect(self.lab.dsn(node), autocommit=True) as conn:
            conn.execute(
                f"create table if not exists {self.table} (id bigint primary key,"
                " at timestamptz not null default clock_timestamp())"
            )

    def write(self, node: str, rows: int, pause: float = 0.0) -> None:
        with psycopg.connect(self.lab.dsn(node), autocommit=True) as conn:
            for n in range(rows):
                key = self.base + len(self.acked) + n
                conn.execute(f"insert into {self.table} (id) values (%s)", (key,))
                self.acked.append(key)
                if pause:
                    time.sleep(pause)

    def missing_on(self, node: str) -> list[int]:
        with psycopg.connect(self.lab.dsn(node), autocommit=True) as conn:
            have = {
                int(r[0])
                for r in conn.execute(
                    f"select id from {self.table} where id >= %s", (self.base,)
                ).fetchall()
            }
        return [k for k in self.acked if k not in have]


def wait_replayed(lab: AnyLab, primary: str, standby: str, deadline: float = 20) -> None:
    """The standby replayed everything the primary wrote so far."""
    with psycopg.connect(lab.dsn(primary), autocommit=True) as conn:
        lsn = conn.execute("select pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(lab.dsn(standby), autocommit=True) as conn:

        def replayed() -> bool:
            row = conn.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
            return bool(row and row[0])

        wait_until(replayed, deadline, f"{standby} to replay {lsn}")


def assert_nothing_lost_uncounted(record: Record, writer: OutsideWriter, new_primary: str) -> None:
    """Every acknowledged row of the writer is on the new primary, or the record counted it:
    exactly, per table, or as a lower bound the record says is one."""
    missing = writer.missing_on(new_primary)
    lost = record.measurements.lost_transactions
    assert lost is not None, "the record has no lost_transactions"
    if lost.loss_accounting == "exact":
        assert lost.tables.get(writer.table, 0) == len(missing), (lost.tables, len(missing))
        assert lost.count == len(lost.transactions) == record.measurements.lost_writes
    else:
        assert "lower bound" in lost.note and lost.count == record.measurements.lost_writes
        assert not missing, "rows were lost that no exact count could show"


def run_failover(lab: AnyLab, environment: str | None = None, **request: Any) -> Record:
    return Runner(
        RunRequest(
            playbook="pg-failover",
            environment=environment or lab.env,
            mode="real",
            operator="on-call",
            **request,
        )
    ).run()


def ssh_sites(home: Path) -> dict[str, dict[str, Any]]:
    state = json.loads((home / "lab-ssh" / "lab.json").read_text())
    return {s["node"]: s for s in state["sites"]}


def ensure_sshd(home: Path) -> None:
    """Each site's sshd up again, by the host key it had; PostgreSQL is left as it is (`lab up`
    would also start a stopped server, which after a failover is the old primary)."""
    from drills.lab.sites import is_site_sshd, lab_sites, start_site_sshd
    from drills.lab.sshd import public_key_line

    lab_dir = home / "lab-ssh"
    state_file = lab_dir / "lab.json"
    state = json.loads(state_file.read_text())
    pubkey = public_key_line(lab_dir / "drctl_ed25519.pub")
    by_name = {s.name: s for s in lab_sites(lab_dir)}
    changed = False
    for item in state["sites"]:
        site = by_name[item["name"]]
        if not is_site_sshd(item.get("sshd_pid"), site.sshd_config):
            item["sshd_pid"] = start_site_sshd(site, int(state["ssh_port"]), pubkey).pid
            changed = True
    if changed:
        state_file.write_text(json.dumps(state, indent=2) + "\n")


def restore_pair(lab: AnyLab, tmp_path: Path) -> None:
    """A healthy streaming pair again: sshd back (two sites), the old primary rejoined by
    drctl's own action if the run could not, then streaming."""
    if lab.over_ssh:
        ensure_sshd(lab.home)
    with contextlib.suppress(AssertionError):
        lab.wait_streaming(5)
        return
    roles = sorted(lab.roles_now().values())
    # Promoted: the old primary rejoins the new one. Not promoted: it starts again as it was.
    fix = {("down", "primary"): REJOIN, ("down", "standby"): START}.get((roles[0], roles[-1]))
    if fix is not None:
        path = tmp_path / f"{fix['name']}-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(fix))
        record = Runner(RunRequest(playbook=str(path), environment=lab.env)).run()
        assert record.status == "passed", record.reason
    lab.wait_streaming(60)


@pytest.fixture
def healthy(any_lab: AnyLab, tmp_path: Path) -> Iterator[AnyLab]:
    with any_lab.active():
        any_lab.wait_streaming()
        try:
            yield any_lab
        finally:
            restore_pair(any_lab, tmp_path)


@pytest.fixture
def two_sites(lab_ssh: Path, tmp_path: Path) -> Iterator[AnyLab]:
    lab = AnyLab(lab_ssh, "lab-ssh")
    with lab.active():
        lab.wait_streaming()
        try:
            yield lab
        finally:
            restore_pair(lab, tmp_path)


def swapped(before: dict[str, str]) -> dict[str, str]:
    return {name: "standby" if role == "primary" else "primary" for name, role in before.items()}


def steps_of(record: Record) -> dict[str, Any]:
    return {s.id: s for s in record.steps}


# -- the labs: primary killed, primary alive ------------------------------------------------------


@pytest.mark.lab
def test_a_real_failover_from_a_primary_already_killed(healthy: AnyLab) -> None:
    lab = healthy
    before = lab.roles_now()
    old, new = lab.role_of("primary"), lab.role_of("standby")
    writer = OutsideWriter(lab)
    writer.prepare(old)
    writer.write(old, 40)
    wait_replayed(lab, old, new)
    killed = kill_instance(data_dir(lab, old))  # the postmaster and every child, kill -9
    assert len(killed) > 1

    record = run_failover(lab)

    assert record.status == "passed", record.reason
    assert lab.roles_now() == swapped(before)
    steps = steps_of(record)
    assert [s.id for s in record.steps] == [
        "declare_incident",
        "inject_crash",
        "fence_old_primary",
        "promote_standby",
        "verify_service",
        "count_lost_transactions",
        "rejoin_old_primary",
    ]
    assert steps["inject_crash"].status == "skipped"
    assert [c.check for c in record.preconditions] == ["pg.is_standby"]  # not pg.is_primary
    fence = steps["fence_old_primary"]
    assert fence.status == "passed" and fence.data["fenced"] is True
    # Nothing was left of it to stop or kill: it was confirmed down from its host and its port.
    decided = [d["decision"] for d in fence.data["decisions"]]
    assert decided[-1] == "fenced" and not {"stop", "kill"} & set(decided), decided
    assert fence.data["killed_pids"] == [] and fence.data["commands"] == []
    assert "no process of its instance is left" in fence.output
    [check] = fence.checks
    assert check.check == "pg.fenced" and check.held
    assert check.observed.startswith("postmaster ") and "0 process(es)" in check.observed
    lost = record.measurements.lost_transactions
    assert lost is not None and lost.loss_accounting == "exact" and lost.node == old
    assert_nothing_lost_uncounted(record, writer, new)
    assert record.overrides_used == []
    assert {m.name for m in record.milestones} >= {"incident_declared", "service_restored"}


@pytest.mark.lab
def test_a_real_failover_fences_a_primary_that_still_runs(healthy: AnyLab) -> None:
    lab = healthy
    before = lab.roles_now()
    old, new = lab.role_of("primary"), lab.role_of("standby")
    writer = OutsideWriter(lab)
    writer.prepare(old)
    writer.write(old, 40)
    running = instance_pids(data_dir(lab, old))

    record = run_failover(lab)

    assert record.status == "passed", record.reason
    assert lab.roles_now() == swapped(before)
    fence = steps_of(record)["fence_old_primary"]
    decisions = fence.data["decisions"]
    assert decisions[0]["decision"] == "stop"
    assert decisions[-1]["decision"] == "fenced"
    assert "is alive (its postmaster runs; its port: accepts writes)" in decisions[0]["sentence"]
    assert any("pg_ctl stop" in c and "-m immediate" in c for c in fence.data["commands"])
    # Every process the instance had before the fence is gone (they were its, not a restart's).
    assert not [pid for pid in running if alive(pid)]
    assert steps_of(record)["promote_standby"].status == "passed"
    lost = record.measurements.lost_transactions
    assert lost is not None and lost.loss_accounting == "exact"
    assert_nothing_lost_uncounted(record, writer, new)


# -- the two-site lab: the old primary's host lost -----------------------------------------------


def lose_host(lab: AnyLab, node: str) -> None:
    """The host is gone: its PostgreSQL dies with it (kill -9 of every process) and its sshd
    too (by pid), so drctl can reach it neither over SSH nor on its port."""
    kill_instance(data_dir(lab, node))
    kill_tree(int(ssh_sites(lab.home)[node]["sshd_pid"]))


@pytest.mark.lab
def test_a_lost_host_is_refused_without_a_fence_and_runs_with_the_override(
    two_sites: AnyLab,
) -> None:
    lab = two_sites
    old, new = lab.role_of("primary"), lab.role_of("standby")
    writer = OutsideWriter(lab)
    writer.prepare(old)
    writer.write(old, 30)
    wait_replayed(lab, old, new)
    lose_host(lab, old)

    refused = run_failover(lab)

    assert refused.status == "aborted"
    steps = steps_of(refused)
    assert steps["fence_old_primary"].status == "failed"
    assert "promote_standby" not in steps
    decision = steps["fence_old_primary"].data["decisions"][-1]
    assert decision["decision"] == "unconfirmed"
    assert f"{old}'s host cannot be reached" in decision["sentence"]
    assert "names no fence command" in decision["sentence"]
    assert f"pg.fenced on {old} did not hold" in refused.reason
    assert lab.roles_now() == {old: "down", new: "standby"}  # nothing was promoted

    overridden = run_failover(lab, overrides=["unfenced_promotion"])

    steps = steps_of(overridden)
    fence = steps["fence_old_primary"]
    assert fence.status == "overridden" and fence.override == "unfenced_promotion"
    assert "went on under override unfenced_promotion, given by on-call" in fence.reason
    assert overridden.overrides_used == ["unfenced_promotion"]
    assert overridden.request["overrides"] == ["unfenced_promotion"]
    assert steps["promote_standby"].status == "passed"
    assert steps["verify_service"].status == "passed"
    # The WAL of a lost host cannot be read: the record says so, and why, and gives the
    # canary's figure only as a lower bound, labelled as one.
    count = steps["count_lost_transactions"]
    assert count.status == "passed" and count.data["loss_accounting"] == "lower_bound"
    lost = overridden.measurements.lost_transactions
    assert lost is not None and lost.loss_accounting == "lower_bound"
    assert f"the WAL of {old} could not be read: its host cannot be reached" in lost.note
    assert "the canary's figures are a lower bound" in lost.note
    canary = overridden.measurements.canary
    assert canary is not None and lost.count == canary.lost
    rpo = next(o for o in overridden.objectives if o.name == "rpo")
    assert not rpo.met and "only a lower bound" in rpo.note
    # The old primary's host cannot rejoin: the run failed there, after the switch itself.
    assert steps["rejoin_old_primary"].status == "failed"
    assert overridden.status == "failed"
    assert lab.roles_now() == {old: "down", new: "primary"}
    assert_nothing_lost_uncounted(overridden, writer, new)


@pytest.mark.lab
def test_a_site_fence_command_fences_a_primary_whose_ssh_is_down(
    two_sites: AnyLab, tmp_path: Path
) -> None:
    """sshd is gone but PostgreSQL still runs and takes writes (a partition of the management
    network): only the site's own fence can stop it. Here that is a command on drctl's machine
    that kills every process of the instance, as a power switch would, and exits 0."""
    lab = two_sites
    old, new = lab.role_of("primary"), lab.role_of("standby")
    writer = OutsideWriter(lab)
    writer.prepare(old)
    writer.write(old, 30)
    wait_replayed(lab, old, new)
    kill_tree(int(ssh_sites(lab.home)[old]["sshd_pid"]))
    assert instance_pids(data_dir(lab, old)), "the old primary should still run"
    power_off = (
        'd="$1"; for i in $(seq 50); do left=0; for p in /proc/[0-9]*; do '
        '[ "$p/cwd" -ef "$d" ] && { kill -KILL "${p#/proc/}" 2>/dev/null; left=1; }; done; '
        '[ "$left" = 0 ] && exit 0; sleep 0.1; done; exit 1'
    )
    env = yaml.safe_load(lab.environment_file.read_text())
    env["name"] = "lab-ssh-fenced"
    env["nodes"][old]["fence"] = {
        "command": ["sh", "-c", power_off, "sh", data_dir(lab, old)],
        "on": "local",
        "timeout": 30,
    }
    path = tmp_path / "lab-ssh-fenced.yaml"
    path.write_text(yaml.safe_dump(env))

    record = run_failover(lab, environment=str(path))

    steps = steps_of(record)
    fence = steps["fence_old_primary"]
    assert fence.status == "passed", fence.reason
    assert [d["decision"] for d in fence.data["decisions"]] == ["site_fence", "fenced"]
    assert "exited 0" in fence.data["decisions"][-1]["sentence"]
    assert fence.checks[0].held and "site fence command: confirmed" in fence.checks[0].observed
    assert record.overrides_used == []
    assert instance_pids(data_dir(lab, old)) == []  # the fence really stopped it
    assert steps["promote_standby"].status == "passed"
    lost = record.measurements.lost_transactions
    assert lost is not None and lost.loss_accounting == "lower_bound"
    assert steps["rejoin_old_primary"].status == "failed"  # its host is still unreachable
    assert lab.roles_now() == {old: "down", new: "primary"}
    assert_nothing_lost_uncounted(record, writer, new)
