"""Drills on the real labs: PostgreSQL primary and standby on 127.0.0.1, and two sites reached
only over SSH (127.0.0.2 and 127.0.0.3); real Prefect flows.

The switchover and failover run through the Prefect flow (one flow run, a task run per step) on
the session's Prefect test harness; runner semantics (gates, fencing, rollback) run through the
same runner without Prefect; the CLI is run as a user runs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from drills.engine.runner import Runner, RunRequest
from drills.executors.postgres import SqlExecutor
from drills.lab.onehost import Lab
from drills.model.record import Record
from drills.records.store import RecordStore
from tests.helpers import REPO, drctl
from tests.labs import AnyLab

pytestmark = [pytest.mark.lab, pytest.mark.prefect]


def roles_now(home: Path) -> dict[str, str]:
    return {n.name: n.role for n in Lab(home).status()}


def pids_now(home: Path) -> dict[str, int | None]:
    return {n.name: n.pid for n in Lab(home).status()}


def store(home: Path) -> RecordStore:
    return RecordStore(home / "records", home / "locks")


def wait_streaming(home: Path, deadline: float = 30) -> None:
    """The lab is a healthy pair again: one primary, one standby streaming from it."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        roles = roles_now(home)
        if sorted(roles.values()) == ["primary", "standby"]:
            standby = next(n for n in Lab(home).status() if n.role == "standby")
            status = SqlExecutor(standby.dsn, host=standby.name).scalar(
                "select status from pg_stat_wal_receiver"
            )
            if status == "streaming":
                return
        time.sleep(0.1)
    raise AssertionError(f"the lab did not become a streaming pair: {roles_now(home)}")


def assert_timings_in_order(record: Record) -> None:
    previous_end = 0.0
    for step in record.steps:
        o = step.offsets
        assert step.started_at <= step.ended_at
        assert previous_end <= o.started <= o.ended, step.id
        if o.returned is not None:
            assert o.started <= o.returned <= o.ended, step.id
        if o.converged is not None:
            assert o.returned is not None and o.returned <= o.converged <= o.ended, step.id
            assert step.converged_at is not None and step.started_at <= step.converged_at
        assert step.duration_seconds == pytest.approx(o.ended - o.started, abs=1e-6)
        previous_end = o.ended
    assert record.ended_at is not None and record.started_at < record.ended_at


def task_run_names(api: str, flow_run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )
        return [r.name for r in runs]


def test_switchover_runs_as_a_prefect_flow(any_lab: AnyLab, prefect_api: str) -> None:
    from flows.drill import run_drill

    any_lab.wait_streaming()
    before = any_lab.roles_now()
    record = any_lab.store.load(
        run_drill(RunRequest(playbook="pg-switchover", environment=any_lab.env))
    )

    assert record.status == "passed", record.reason
    after = any_lab.roles_now()
    assert after == {
        name: "standby" if role == "primary" else "primary" for name, role in before.items()
    }
    assert [s.id for s in record.steps] == [
        "stop_primary",
        "confirm_standby_caught_up",
        "promote_standby",
        "verify_service",
        "rejoin_old_primary",
    ]
    assert all(s.status == "passed" for s in record.steps)
    assert {o.name: o.met for o in record.objectives} == {
        "rto": True,
        "rpo": True,
        "write_outage": True,
    }
    m = record.measurements
    assert m.lost_writes == 0 and m.rpo_seconds == 0.0
    assert m.canary is not None and m.canary.acknowledged > 0
    assert m.write_outage_seconds is not None and 0 < m.write_outage_seconds < 5
    assert m.write_probe is not None
    assert (m.write_probe.last_write_node, m.write_probe.first_write_node) == (
        record.roles["primary"],
        record.roles["standby"],
    )
    rto = next(o for o in record.objectives if o.name == "rto")
    assert rto.measured_seconds is not None and rto.measured_seconds > 0
    assert rto.basis == "outage_started → service_restored"
    # The service came back through the application, after the database took writes again.
    stamps = {ms.name: ms.offset for ms in record.milestones}
    assert stamps["outage_started"] < stamps["writes_restored"] <= stamps["service_restored"]
    roundtrip = next(s for s in record.steps if s.id == "verify_service").checks[0]
    assert roundtrip.check == "his.registration_roundtrip" and roundtrip.held
    assert "written and read back" in roundtrip.observed
    assert m.service_outage_seconds is not None and 0 < m.service_outage_seconds < 5
    assert (
        m.service_probe is not None and m.service_probe.first_write_node == record.roles["standby"]
    )
    assert_timings_in_order(record)
    # Every step ran on the host of its node: over SSH at the two sites.
    executors = {n["executor"] for n in record.environment["nodes"].values()}
    assert executors == ({"ssh", "local"} if any_lab.env == "lab-ssh" else {"local"})
    # One flow run: the preconditions' task run, then one task run per step, named after it.
    flow_run_id = record.orchestrator["prefect_flow_run_id"]
    assert task_run_names(prefect_api, flow_run_id) == [
        "preconditions",
        *[s.id for s in record.steps],
    ]
    assert (
        record.playbook["sha256"]
        == __import__("hashlib")
        .sha256((REPO / "playbooks/pg-switchover.yaml").read_bytes())
        .hexdigest()
    )
    any_lab.wait_streaming()


def test_failover_crashes_fences_promotes_and_rejoins(any_lab: AnyLab, prefect_api: str) -> None:
    from flows.drill import run_drill

    any_lab.wait_streaming()
    before = any_lab.roles_now()
    record = any_lab.store.load(
        run_drill(RunRequest(playbook="pg-failover", environment=any_lab.env))
    )

    assert record.status == "passed", record.reason
    assert any_lab.roles_now() == {
        name: "standby" if role == "primary" else "primary" for name, role in before.items()
    }
    steps = {s.id: s for s in record.steps}
    assert "SIGKILL" in steps["inject_crash"].output
    fence = steps["fence_old_primary"]
    [fenced] = fence.checks
    assert fenced.check == "pg.fenced" and fenced.held
    assert "0 process(es) of its instance; port: no connection" in fenced.observed
    assert fence.data["fenced"] is True and fence.data["decisions"][-1]["decision"] == "fenced"
    names = [m.name for m in record.milestones]
    assert names.index("incident_declared") < names.index("writes_restored")
    assert names.index("writes_restored") < names.index("service_restored")
    m = record.measurements
    assert m.write_outage_seconds is not None and m.write_outage_seconds > 0
    assert m.lost_writes is not None and m.rpo_seconds is not None
    # What the crash lost is counted from the old primary's WAL, before its rewind.
    lost = m.lost_transactions
    assert lost is not None and lost.loss_accounting == "exact", lost
    assert m.lost_writes == lost.count and m.rpo_seconds == lost.rpo_seconds
    assert steps["count_lost_transactions"].status == "passed"
    assert record.overrides_used == []
    assert_timings_in_order(record)
    any_lab.wait_streaming()


def blind_environment(home: Path, tmp_path: Path, node: str) -> Path:
    """The lab's environment with ``node``'s data directory where drctl cannot see it: on one
    host, the way to a fence that cannot be confirmed (its host answers, its files do not)."""
    data = yaml.safe_load((home / "environments" / "lab.yaml").read_text())
    data["name"] = "lab-blind"
    data["nodes"][node]["postgres"]["data_dir"] = str(tmp_path / "not-its-data-directory")
    path = tmp_path / "lab-blind.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_real_failover_refuses_to_promote_when_the_fence_cannot_be_confirmed(
    lab: Path, tmp_path: Path
) -> None:
    wait_streaming(lab)
    before, pids = roles_now(lab), pids_now(lab)
    primary = next(name for name, role in before.items() if role == "primary")
    env = blind_environment(lab, tmp_path, primary)
    record = Runner(RunRequest(playbook="pg-failover", environment=str(env), mode="real")).run()

    assert record.status == "aborted"
    steps = {s.id: s for s in record.steps}
    assert steps["inject_crash"].status == "skipped"  # drill-only: a real incident needs none
    assert steps["fence_old_primary"].status == "failed"
    assert "promote_standby" not in steps
    assert f"pg.fenced on {primary} did not hold" in record.reason
    decision = steps["fence_old_primary"].data["decisions"][-1]
    assert decision["decision"] == "unconfirmed"
    assert "its data directory cannot be seen there" in decision["sentence"]
    assert roles_now(lab) == before and pids_now(lab) == pids  # nothing was stopped


def test_the_fencing_override_is_explicit_and_recorded(lab: Path, tmp_path: Path) -> None:
    from tests.test_real_failover import data_dir, kill_instance, restore_pair

    wait_streaming(lab)
    before = roles_now(lab)
    primary = next(name for name, role in before.items() if role == "primary")
    kill_instance(data_dir(AnyLab(lab, "lab"), primary))  # dead, but drctl cannot confirm it
    request = RunRequest(
        playbook="pg-failover",
        environment=str(blind_environment(lab, tmp_path, primary)),
        mode="real",
        overrides=["unfenced_promotion"],
        operator="on-call",
    )
    record = Runner(request).run()

    steps = {s.id: s for s in record.steps}
    assert steps["fence_old_primary"].status == "overridden"
    assert "override unfenced_promotion, given by on-call" in steps["fence_old_primary"].reason
    assert record.overrides_used == ["unfenced_promotion"]
    assert record.request["overrides"] == ["unfenced_promotion"]
    assert steps["promote_standby"].status == "passed"
    # Its WAL cannot be read where drctl looks for it: the count is a lower bound, said so.
    lost = record.measurements.lost_transactions
    assert lost is not None and lost.loss_accounting == "lower_bound"
    assert steps["rejoin_old_primary"].status == "failed"
    # drctl's own rejoin, with the real environment, puts the pair back.
    restore_pair(AnyLab(lab, "lab"), tmp_path)
    assert roles_now(lab) == {
        name: "standby" if role == "primary" else "primary" for name, role in before.items()
    }
    wait_streaming(lab)


def write_playbook(tmp_path: Path, body: dict[str, Any], name: str = "t.yaml") -> Path:
    base = {
        "name": "t",
        "version": 1,
        "kind": "inspection",
        "title": {"en": "T", "zh": "测"},
        "roles": ["primary", "standby"],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**base, **body}, allow_unicode=True), encoding="utf-8")
    return path


def test_a_failed_precondition_changes_nothing(lab: Path, tmp_path: Path) -> None:
    wait_streaming(lab)
    pids = pids_now(lab)
    playbook = write_playbook(
        tmp_path,
        {
            "preconditions": [{"check": "pg.is_standby", "target": "primary"}],
            "steps": [{"id": "stop", "action": "pg.stop", "target": "primary"}],
        },
    )
    record = Runner(RunRequest(playbook=str(playbook), environment="lab")).run()
    assert record.status == "aborted"
    assert record.steps == []
    assert record.reason.startswith("precondition pg.is_standby on")
    assert "nothing was changed" in record.reason
    assert pids_now(lab) == pids


def test_a_rolled_back_run_fails_and_undoes_in_reverse(lab: Path, tmp_path: Path) -> None:
    wait_streaming(lab)
    playbook = write_playbook(
        tmp_path,
        {
            "steps": [
                {
                    "id": "make_a",
                    "action": "sql",
                    "target": "primary",
                    "with": {"statement": "create table rollback_a (x int)"},
                },
                {
                    "id": "make_b",
                    "action": "sql",
                    "target": "primary",
                    "with": {"statement": "create table rollback_b (x int)"},
                },
                {
                    "id": "bad_check",
                    "action": "observe",
                    "target": "primary",
                    "within": "200ms",
                    "verify": [{"check": "pg.is_standby"}],
                    "on_failure": "rollback",
                },
                {"id": "never", "action": "observe", "target": "primary"},
            ],
            "rollback": [
                {
                    "id": "drop_a",
                    "undoes": "make_a",
                    "action": "sql",
                    "target": "primary",
                    "with": {"statement": "drop table rollback_a"},
                },
                {
                    "id": "drop_b",
                    "undoes": "make_b",
                    "action": "sql",
                    "target": "primary",
                    # fails if drop_a ran first: proves the reverse order
                    "with": {"statement": "drop table rollback_b; select 1 from rollback_a"},
                },
            ],
        },
    )
    record = Runner(RunRequest(playbook=str(playbook), environment="lab")).run()
    assert record.status == "failed" and record.rolled_back
    assert [(s.id, s.phase, s.status) for s in record.steps] == [
        ("make_a", "main", "passed"),
        ("make_b", "main", "passed"),
        ("bad_check", "main", "failed"),
        ("drop_b", "rollback", "passed"),
        ("drop_a", "rollback", "passed"),
    ]
    check = record.steps[2].checks[0]
    assert (check.observed, check.expected, check.verdict) == ("primary", "standby", "deviated")
    # It changed something and failed: what it left is observed; the pair is whole, so the
    # reason is the failure's alone and a note says the pair is as it should be.
    assert record.reason == "step bad_check failed (" + record.steps[2].reason + (
        "); the drill was rolled back"
    )
    assert record.left is not None and record.left["whole"] is True and not record.left["next"]
    primary, standby = record.roles["primary"], record.roles["standby"]
    note = next(n for n in record.notes if n.startswith("what the run left: "))
    assert sorted(note.removeprefix("what the run left: ").split("; ")) == sorted(
        [f"{primary} is primary", f"{standby} is standby, streaming from {primary}"]
    )
    primary = SqlExecutor.for_node(record.roles["primary"], _env_node(lab, record))
    assert primary.scalar("select count(*) from pg_tables where tablename like 'rollback_%'") == 0


def _env_node(home: Path, record: Record) -> Any:
    from drills.engine.loader import resolve_environment

    return resolve_environment("lab").nodes[record.roles["primary"]]


# -- the CLI, as a user runs it ------------------------------------------------------------------


def test_plan_shows_commands_and_changes_nothing(lab: Path) -> None:
    wait_streaming(lab)
    pids, roles, records = pids_now(lab), roles_now(lab), store(lab).ids()
    result = drctl("plan", "pg-switchover", "--env", "lab")
    assert result.returncode == 0, result.stderr
    assert "pg_ctl stop" in result.stdout and "pg_promote" in result.stdout
    assert "pg_rewind" in result.stdout and "nothing was run." in result.stdout
    for step in (
        "stop_primary",
        "confirm_standby_caught_up",
        "promote_standby",
        "rejoin_old_primary",
        "restart_old_primary",
    ):
        assert step in result.stdout
    assert pids_now(lab) == pids and roles_now(lab) == roles and store(lab).ids() == records


def lab_env_copy(home: Path, tmp_path: Path, **changes: Any) -> Path:
    data = yaml.safe_load((home / "environments" / "lab.yaml").read_text())
    data.update(changes)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "pg-switchover", "--env", "nowhere"], "no environment named 'nowhere'"),
        (["run", "no-such-playbook", "--env", "lab"], "no playbook file or shipped playbook"),
        (
            ["run", "pg-failover", "--env", "lab", "--override", "yolo"],
            "override yolo is not offered",
        ),
        (["plan", "pg-switchover", "--env", "nowhere"], "no environment named 'nowhere'"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_2(lab: Path, args: list[str], message: str) -> None:
    records = store(lab).ids()
    result = drctl(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert store(lab).ids() == records


def test_a_role_the_environment_lacks_is_exit_2(lab: Path, tmp_path: Path) -> None:
    playbook = write_playbook(
        tmp_path,
        {
            "roles": ["primary", "witness"],
            "steps": [{"id": "look", "action": "observe", "target": "witness"}],
        },
    )
    result = drctl("run", str(playbook), "--env", "lab")
    assert result.returncode == 2
    assert "needs role(s) witness, which environment 'lab' does not have" in result.stderr


def test_a_protected_environment_refuses_drills(lab: Path, tmp_path: Path) -> None:
    env = lab_env_copy(lab, tmp_path, name="lab-protected", protected=True)
    pids = pids_now(lab)
    result = drctl("run", "pg-switchover", "--env", str(env))
    assert result.returncode == 3
    assert "is protected" in result.stderr
    assert pids_now(lab) == pids


def test_run_cli_summary_and_exit_1_when_an_objective_is_missed(
    lab: Path, tmp_path: Path, prefect_api: str
) -> None:
    wait_streaming(lab)
    text = (
        (REPO / "playbooks/pg-switchover.yaml")
        .read_text()
        .replace("    target: 60s\n", "    target: 1ms\n")
    )
    playbook = tmp_path / "strict-switchover.yaml"
    playbook.write_text(text)
    result = drctl("run", str(playbook), "--env", "lab", env={"PREFECT_API_URL": prefect_api})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "objectives missed: rto" in result.stdout
    for step in ("stop_primary", "promote_standby", "rejoin_old_primary"):
        assert step in result.stdout
    listed = json.loads(drctl("records", "list", "--json").stdout)
    assert listed[0]["status"] == "failed" and listed[0]["playbook"] == "pg-switchover"
    shown = json.loads(drctl("records", "show", listed[0]["id"], "--json").stdout)
    assert shown["objectives"][0]["name"] == "rto" and shown["objectives"][0]["met"] is False
    assert shown["objectives"][0]["target_seconds"] == 0.001
    wait_streaming(lab)


def test_a_killed_run_leaves_an_interrupted_record_and_a_lock(
    lab: Path, tmp_path: Path, prefect_api: str
) -> None:
    env = lab_env_copy(lab, tmp_path, name="lab-kill")
    playbook = write_playbook(
        tmp_path,
        {
            "name": "slow",
            "steps": [
                {
                    "id": "first",
                    "action": "observe",
                    "target": "primary",
                    "verify": [{"check": "pg.is_primary"}],
                },
                {
                    "id": "long",
                    "action": "wait",
                    "target": "primary",
                    "with": {"seconds": 120},
                    "timeout": "200s",
                },
                {"id": "after", "action": "observe", "target": "primary"},
            ],
        },
    )
    exe = Path(sys.executable).parent / "drctl"
    proc = subprocess.Popen(
        [str(exe), "run", str(playbook), "--env", str(env)],
        env={**os.environ, "PREFECT_API_URL": prefect_api},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        journal = None
        while time.monotonic() < deadline and journal is None:
            for path in (lab / "records").glob("*-slow-lab-kill-*.journal.jsonl"):
                if '"id": "first"' in path.read_text():
                    journal = path
            time.sleep(0.1)
        assert journal is not None, "the run never finished its first step"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run_id = journal.name.split(".")[0]
    shown = drctl("records", "show", run_id, "--json")
    record = json.loads(shown.stdout)
    assert record["status"] == "interrupted"
    assert [s["id"] for s in record["steps"]] == ["first"]
    assert record["steps"][0]["status"] == "passed"
    again = drctl("run", str(playbook), "--env", str(env))
    assert again.returncode == 3
    assert f"left by run {run_id}" in again.stderr and "drctl unlock lab-kill" in again.stderr
    unlocked = drctl("unlock", "lab-kill")
    assert unlocked.returncode == 0 and run_id in unlocked.stdout


# -- a drill that ends with the pair broken says so ---------------------------------------------


def test_a_failover_whose_standby_dies_says_no_node_is_primary_and_what_next(
    lab: Path, tmp_path: Path
) -> None:
    """Issue 10's must-hold: a drill that ends leaves one primary with the other streaming, or
    its record says exactly why not. The standby is killed (kill -9, every process) as the
    failover reaches its fence: the promotion fails, both nodes are down, and the record, the
    terminal's view of it and the Chinese report say which node is down, that no node accepts
    writes, and what to run next."""
    from rich.console import Console

    from drills.cli.common import print_interruption
    from drills.engine.listeners import Listener
    from drills.model.playbook import Step
    from drills.reports import render_report
    from tests.test_real_failover import kill_instance

    wait_streaming(lab)
    pair = AnyLab(lab, "lab")
    primary, standby = pair.role_of("primary"), pair.role_of("standby")
    standby_dir = pair.node(standby).postgres
    assert standby_dir is not None

    class KillStandbyAtTheFence(Listener):
        def __init__(self) -> None:
            self.killed: list[int] = []

        def step_started(self, step: Step, node: str, phase: str) -> None:
            if step.id == "fence_old_primary":
                self.killed += kill_instance(standby_dir.data_dir)

    killer = KillStandbyAtTheFence()
    try:
        record = Runner(
            RunRequest(playbook="pg-failover", environment="lab"), progress=killer
        ).run()
        assert killer.killed, "the standby was not killed"
        assert record.status == "aborted"
        assert [(s.id, s.status) for s in record.steps][-1] == ("promote_standby", "failed")
        # Observed as the run ended, from the servers: both down, no role filled.
        assert record.left is not None and record.left["whole"] is False
        state = record.left["state"]
        assert state["observed"][primary] == "down" and state["observed"][standby] == "down"
        assert sorted(state["down"]) == sorted([primary, standby])
        assert state["unfilled"] == ["primary", "standby"]
        # The reason says it: the step that failed, then what the run left, then what next.
        assert record.reason.startswith("step promote_standby failed")
        left = record.reason.split("; what the run left: ", 1)[1]
        assert f"{primary} is down; {standby} is down" in left
        assert "role primary unfilled (no node accepts writes)" in left
        assert "role standby unfilled (no node replicates)" in left
        env_check = "drctl env check --env lab"
        assert f"next: `{env_check}` (after starting the database of " in left
        assert record.left["next"][0]["command"] == env_check
        # No standby is up, so no real failover is offered: there is nothing to promote.
        assert [c["command"] for c in record.left["next"]] == [env_check]
        # Sealed as it was said; the terminal shows it as for an interrupted run.
        sealed = store(lab).sealed(record.id)
        assert sealed.record == record
        shown = drctl("records", "show", record.id)
        assert shown.returncode == 0 and "what the run left:" in shown.stdout
        terminal = Console(record=True, width=200)
        print_interruption(terminal, record)  # what `drctl run` prints after the record
        said = terminal.export_text()
        assert f"left: {primary} is down" in said and f"left: {standby} is down" in said
        assert "left: role primary is unfilled" in said and f"next: {env_check}  (" in said
        zh = render_report(sealed, fmt="md", lang="zh").decode()
        assert "本次运行留下的状态：" in zh and "主库角色无节点承担（没有节点接受写入）" in zh
        assert f"{primary} 未运行" in zh and f"{standby} 未运行" in zh
        assert "原文" not in zh.split("本次运行留下的状态：", 1)[1].split("\n", 1)[0]
    finally:
        Lab(lab).up()  # the lab's own start order: the newest data as primary, never two
        wait_streaming(lab, 60)
