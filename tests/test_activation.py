"""The emergency activation drill: the incident declared, an engineer acknowledging through the
paused flow run (the Prefect API, `drctl ack`, or its file), the switch to DR, and the contract's
objectives (response within 10 minutes, activation within 30) computed from those moments.

The human steps are driven through the session's Prefect test harness; the switch runs on the
session's lab (roles trade places; each test waits for a streaming pair before and after). The
main activation runs on both session labs (`any_lab`): at the two-site lab the crash, fencing
and rejoin happen on the primary's site over SSH.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from drills.engine.human import write_ack_file
from drills.engine.loader import bundled_playbooks
from drills.engine.runner import RunRequest
from drills.model.record import Record
from tests.helpers import drctl, paused_flow_run, run_in_thread
from tests.labs import AnyLab
from tests.test_drills import roles_now, store, wait_streaming

pytestmark = [pytest.mark.lab, pytest.mark.prefect]

PLAYBOOK = "his-emergency-activation"


def run_id_of(home: Path, flow_run_id: UUID) -> str:
    """The drill's run id, from the journal that names the flow run."""
    for path in (home / "records").glob("*.journal.jsonl"):
        first = json.loads(path.read_text().splitlines()[0])
        if first.get("orchestrator", {}).get("prefect_flow_run_id") == str(flow_run_id):
            return str(first["run_id"])
    raise AssertionError(f"no journal names flow run {flow_run_id}")


def finish(thread: threading.Thread, out: dict[str, Any], home: Path) -> Record:
    thread.join(timeout=180)
    assert not thread.is_alive(), "the drill did not finish"
    assert "error" not in out, out.get("error")
    return store(home).load(out["id"])


def stamps(record: Record) -> dict[str, Any]:
    return {m.name: m for m in record.milestones}


def objective(record: Record, name: str) -> Any:
    return next(o for o in record.objectives if o.name == name)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def declared(minutes_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes_ago)


def test_acknowledged_through_the_api_activates_and_meets_the_contract(
    any_lab: AnyLab, prefect_api: str
) -> None:
    from prefect.flow_runs import resume_flow_run

    any_lab.wait_streaming()
    before = any_lab.roles_now()
    declared_at = declared(2)
    thread, out = run_in_thread(
        RunRequest(
            playbook=PLAYBOOK,
            environment=any_lab.env,
            incident_declared_at=declared_at,
            declared_by="HIS duty desk",
        )
    )
    flow_run_id = paused_flow_run(PLAYBOOK)
    assert any_lab.roles_now() == before  # nothing switched while nobody had acknowledged
    time.sleep(1.5)  # the response measured must include this wait
    resume_flow_run(flow_run_id, run_input={"engineer": "Wang (vendor)", "note": "on it"})
    record = finish(thread, out, any_lab.home)

    assert record.status == "passed", record.reason
    assert any_lab.roles_now() == {
        name: "standby" if role == "primary" else "primary" for name, role in before.items()
    }
    m = stamps(record)
    order = ["incident_declared", "engineer_acknowledged", "activation_started", "service_verified"]
    assert [m[n].offset for n in order] == sorted(m[n].offset for n in order)
    assert m["incident_declared"].at == declared_at.strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{declared_at.microsecond // 1000:03d}Z"
    )
    assert -125 < m["incident_declared"].offset < -119  # before the run: a wall difference
    steps = {s.id: s for s in record.steps}
    ack = steps["acknowledge"]
    assert ack.data["engineer"] == "Wang (vendor)" and ack.data["channel"] == "prefect-ui"
    assert ack.data["note"] == "on it" and ack.returned_at == m["engineer_acknowledged"].at
    assert ack.data["waited_seconds"] >= 1.5
    response = objective(record, "response")
    assert response.met and response.target_seconds == 600
    assert response.measured_seconds == pytest.approx(
        epoch(ack.returned_at or "") - declared_at.timestamp(), abs=1.0
    )
    assert response.measured_seconds > 121.5
    assert "10 minutes" in response.source
    activation = objective(record, "activation")
    assert activation.met and activation.target_seconds == 1800
    assert activation.measured_seconds is not None
    assert activation.measured_seconds > response.measured_seconds
    assert steps["declare_incident"].data["source"] == "run request"
    assert steps["declare_incident"].data["declared_by"] == "HIS duty desk"
    assert any("wall-clock difference" in n for n in record.notes)
    assert record.request["declared_by"] == "HIS duty desk"
    # The request is kept as JSON: the declaration time is ISO 8601, as the milestones are.
    assert "T" in record.request["incident_declared_at"]
    assert steps["verify_service"].checks[0].held
    # The crash, the fencing and the rejoin happened on the primary's host: over SSH at site A
    # (or whichever site held the primary) at the two-site lab.
    old_primary = record.roles["primary"]
    assert before[old_primary] == "primary"
    crash = steps["inject_crash"].data
    assert (crash["host"], crash["address"]) == (old_primary, any_lab.address_of(old_primary))
    if any_lab.over_ssh:
        assert crash["address"].startswith("drctl-site-")
        assert f"on {crash['address']}" in steps["inject_crash"].output
    executors = {n["executor"] for n in record.environment["nodes"].values()}
    assert executors == ({"ssh", "local"} if any_lab.over_ssh else {"local"})
    assert all(s.status == "passed" for s in record.steps)
    # The playbook's db.* steps ran PostgreSQL's actions: the environment's nodes are PostgreSQL
    # (the same playbook runs Data Guard's on an Oracle one: test_oracle_drills.py).
    ran = {s.id: s.data.get("dispatched", {}).get("action") for s in record.steps}
    assert ran == {
        "declare_incident": None,
        "acknowledge": None,
        "inject_crash": "pg.kill",
        "fence_old_primary": "pg.fence",
        "lag_before_failover": None,  # nothing to read: the WAL counts every loss afterwards
        "promote_standby": "pg.promote",
        "verify_service": None,
        "count_lost_transactions": "pg.count_lost_transactions",
        "rejoin_old_primary": "pg.rejoin_as_standby",
    }
    assert "nothing ran on" in steps["lag_before_failover"].output
    assert steps["lag_before_failover"].data["dispatched"]["engine"] == "postgres"
    assert steps["fence_old_primary"].data["fenced"] is True  # pg.fence's own data, kept
    [fenced] = steps["fence_old_primary"].checks
    assert (fenced.check, fenced.held) == ("db.fenced", True)
    lost = record.measurements.lost_transactions
    assert lost is not None and lost.node == old_primary  # counted from the old primary's WAL
    assert lost.loss_accounting == "exact", lost.note
    any_lab.wait_streaming()


def test_plan_shows_the_postgres_commands_of_the_neutral_steps(any_lab: AnyLab) -> None:
    shown = drctl("plan", PLAYBOOK, "--env", any_lab.env, home=any_lab.home)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    text = " ".join(shown.stdout.split())
    for line in (
        "inject_crash: db.crash on primary",
        "$ postgres: pg.kill",
        "$ postgres: pg.fence",
        "$ postgres: pg.promote",
        "select pg_promote(wait => false)",
        "$ postgres: pg.count_lost_transactions",
        "$ postgres: pg.rejoin_as_standby",
        "pg_rewind --target-pgdata=",
        "verify db.fenced on primary",
    ):
        assert line in text, (line, shown.stdout)
    assert "nothing was run." in text


def test_a_late_acknowledgement_fails_the_response_objective(lab: Path, prefect_api: str) -> None:
    from prefect.flow_runs import resume_flow_run

    wait_streaming(lab)
    thread, out = run_in_thread(
        RunRequest(playbook=PLAYBOOK, environment="lab", incident_declared_at=declared(11))
    )
    resume_flow_run(paused_flow_run(PLAYBOOK), run_input={"engineer": "Zhao"})
    record = finish(thread, out, lab)

    assert all(s.status == "passed" for s in record.steps)  # the switch itself worked
    assert record.status == "failed"
    assert "objectives missed: response" in record.reason
    response = objective(record, "response")
    assert not response.met and response.measured_seconds is not None
    assert 660 <= response.measured_seconds < 700
    assert objective(record, "activation").met
    wait_streaming(lab)


def test_drctl_ack_resumes_the_paused_run(lab: Path, prefect_api: str) -> None:
    wait_streaming(lab)
    thread, out = run_in_thread(
        RunRequest(playbook=PLAYBOOK, environment="lab", incident_declared_at=declared(1))
    )
    run_id = run_id_of(lab, paused_flow_run(PLAYBOOK))
    acked = drctl("ack", run_id, "--by", "Chen (on call)", env={"PREFECT_API_URL": prefect_api})
    assert acked.returncode == 0, acked.stdout + acked.stderr
    assert "resumed flow run" in acked.stdout
    record = finish(thread, out, lab)
    assert record.id == run_id
    assert record.status == "passed", record.reason
    ack = next(s for s in record.steps if s.id == "acknowledge")
    assert (ack.data["engineer"], ack.data["channel"]) == ("Chen (on call)", "drctl-ack")
    again = drctl("ack", run_id, env={"PREFECT_API_URL": prefect_api})
    assert again.returncode == 3 and "has ended" in again.stderr
    wait_streaming(lab)


def short_playbook(tmp_path: Path, *, timeout: str, only_human: bool = False) -> Path:
    data = yaml.safe_load((bundled_playbooks() / f"{PLAYBOOK}.yaml").read_text())
    for step in data["steps"]:
        if step["id"] == "acknowledge":
            step["timeout"] = timeout
    if only_human:
        data["steps"] = data["steps"][:2]
        data["objectives"].pop("activation")
        data["measurements"] = {}
    path = tmp_path / "activation.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_nobody_acknowledges_so_nothing_switches(
    lab: Path, prefect_api: str, tmp_path: Path
) -> None:
    wait_streaming(lab)
    before = roles_now(lab)
    playbook = short_playbook(tmp_path, timeout="3s")
    thread, out = run_in_thread(RunRequest(playbook=str(playbook), environment="lab"))
    paused_flow_run(str(playbook))
    record = finish(thread, out, lab)

    assert record.status == "aborted"
    assert "step acknowledge failed (nobody acknowledged within 3s" in record.reason
    assert [s.id for s in record.steps] == ["declare_incident", "acknowledge"]
    assert roles_now(lab) == before  # no crash, no promotion
    declared_step = record.steps[0]
    assert declared_step.data["source"] == "run start"
    assert stamps(record)["incident_declared"].offset == 0.0
    assert not objective(record, "response").met
    wait_streaming(lab)


def test_drctl_acks_file_reaches_a_run_whose_api_it_cannot_reach(
    lab: Path, prefect_api: str, tmp_path: Path
) -> None:
    playbook = short_playbook(tmp_path, timeout="60s", only_human=True)
    thread, out = run_in_thread(
        RunRequest(playbook=str(playbook), environment="lab", incident_declared_at=declared(3))
    )
    run_id = run_id_of(lab, paused_flow_run(str(playbook)))
    written = write_ack_file(run_id, "acknowledge", "Liu (night shift)", "by phone")
    given = json.loads(written.read_text())["at"]
    record = finish(thread, out, lab)
    assert record.status == "passed", record.reason
    ack = record.steps[1]
    assert (ack.data["engineer"], ack.data["channel"]) == ("Liu (night shift)", "file")
    assert epoch(ack.returned_at or "") == pytest.approx(given, abs=0.002)
    response = objective(record, "response")
    assert response.met
    assert response.measured_seconds == pytest.approx(180, abs=5)


def test_a_declared_incident_event_starts_the_activation_deployment(prefect_api: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events import emit_event

    from drills.ops.definitions import load_definitions, shipped_definitions
    from flows.deployments import plan_deployments, runner_deployments

    loaded, broken = load_definitions([shipped_definitions() / "emergency-activation.yaml"])
    assert broken == [] and loaded[0].usable
    [deployment] = runner_deployments(plan_deployments(loaded, datetime.now(UTC).date()))
    deployment_id = deployment.apply()
    owner = f"prefect.deployment.{deployment_id}"
    try:
        with get_client(sync_client=True) as client:
            automations = [
                a for a in client.read_automations() if a.name.startswith("emergency-activation")
            ]
        assert [a.name for a in automations] == ["emergency-activation: dr.incident.declared"]
        # An event about another environment starts nothing; the one about lab does.
        emit_event("dr.incident.declared", resource={"prefect.resource.id": "dr.environment.x"})
        event = emit_event(
            "dr.incident.declared",
            resource={"prefect.resource.id": "dr.environment.lab"},
            payload={"declared_by": "HIS monitoring"},
        )
        unsigned = emit_event(
            "dr.incident.declared", resource={"prefect.resource.id": "dr.environment.lab"}
        )
        assert event is not None and unsigned is not None
        deadline = time.monotonic() + 60
        runs: list[Any] = []
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline and len(runs) < 2:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                )
                time.sleep(0.3)
            time.sleep(2)  # an event it should not have acted on would have made a run by now
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            try:
                assert len(runs) == 2, [r.parameters for r in runs]
                requests = sorted(
                    (RunRequest.model_validate(r.parameters) for r in runs),
                    key=lambda r: str(r.incident_declared_at),
                )
                assert {(r.playbook, r.environment, r.mode) for r in requests} == {
                    (PLAYBOOK, "lab", "drill")
                }
                assert [r.incident_declared_at for r in requests] == [
                    event.occurred,
                    unsigned.occurred,
                ]
                assert requests[0].declared_by == "HIS monitoring"
                assert requests[0].operator == "HIS monitoring"  # the event's word, not root
                assert requests[1].declared_by == f"dr.incident.declared event {unsigned.id}"
            finally:
                for run in runs:
                    client.delete_flow_run(run.id)  # nobody serves it: it would never run
    finally:
        with get_client(sync_client=True) as client:
            client.delete_resource_owned_automations(owner)
            client.delete_deployment(deployment_id)


def test_drctl_incident_declare_starts_the_drill_that_drctl_ack_acknowledges(
    lab: Path, prefect_api: str, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    playbook = short_playbook(tmp_path, timeout="60s", only_human=True)
    at = declared(4).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    exe = str(Path(sys.executable).parent / "drctl")
    args = ["--at", at, "--by", "Dr. Huang", "--ticket", "INC-7", "--playbook", str(playbook)]
    proc = subprocess.Popen(
        [exe, "incident", "declare", "--env", "lab", *args, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        run_id = run_id_of(lab, paused_flow_run(str(playbook)))
        acked = drctl("ack", run_id, "--by", "Sun", env={"PREFECT_API_URL": prefect_api})
        assert acked.returncode == 0, acked.stdout + acked.stderr
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr
    record = Record.model_validate_json(stdout[stdout.index("{") :])
    assert record.id == run_id and record.status == "passed", record.reason
    assert record.request["declared_by"] == "Dr. Huang" and record.request["ticket"] == "INC-7"
    assert stamps(record)["incident_declared"].at == at.replace("Z", ".000Z")
    # Declared 4 minutes before the command ran; answered when `drctl ack` got through (however
    # long the two commands took to start on a loaded machine): exactly that difference.
    ack = next(s for s in record.steps if s.action == "human.acknowledge")
    measured = objective(record, "response").measured_seconds
    assert measured is not None and 240 <= measured < 240 + 120
    assert measured == pytest.approx(
        epoch(ack.returned_at or "") - epoch(at.replace("Z", ".000Z")), abs=0.01
    )
