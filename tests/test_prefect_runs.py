"""Drills started the way the Prefect UI and API start them: a served deployment of a definition,
runs created through the session's Prefect API (``run_deployment``, ``prefect deployment run``),
on the one-host lab.

They check that a run says who and what: the form (top-level fields, Chinese and English titles,
the operator and ticket required, the incident's fields on the activation's form only), the
operator and the OS user kept apart in the record, a failed step as a Failed task run with its
sentence, a skipped one as Skipped, the preconditions as a task run of their own, the steps' logs
with each check's observed value, expectation and verdict, and a failed or refused drill that ends
Failed with its reason and no traceback.

``drctl serve`` runs in its own process, started and stopped (by its pid) by the module's fixture.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from drills.model.record import Record
from drills.records.store import RecordStore
from tests.helpers import REPO

pytestmark = [pytest.mark.lab, pytest.mark.prefect]

NAME = "t-runs"
DEPLOYMENT = f"drill/{NAME}-served"
PLAYBOOK = {
    "name": "ui-run-check",
    "version": 1,
    "kind": "inspection",
    "title": {"en": "A drill run from the UI", "zh": "界面启动的演练"},
    "roles": ["primary", "standby"],
    "preconditions": [{"check": "pg.is_primary", "target": "primary"}],
    "steps": [
        {
            "id": "ask_primary",
            "action": "sql",
            "target": "primary",
            "with": {"statement": "select 41 + 1"},
            "verify": [{"check": "pg.is_primary"}],
        },
        {
            "id": "standby_is_not_primary",
            "action": "observe",
            "target": "standby",
            "verify": [{"check": "pg.is_primary"}],
            "within": "1s",
            "on_failure": "continue",
        },
        {"id": "only_for_real", "action": "observe", "target": "primary", "modes": ["real"]},
    ],
}


def client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


@pytest.fixture(scope="module")
def served(lab: Path, prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``drctl serve`` of one definition (playbook above, environment ``lab``), until the end of
    the module; yields its deployment."""
    where = tmp_path_factory.mktemp("prefect-runs")
    playbook = where / "ui-run-check.yaml"
    playbook.write_text(yaml.safe_dump(PLAYBOOK, allow_unicode=True, sort_keys=False))
    defs = where / "defs"
    defs.mkdir()
    (defs / f"{NAME}.yaml").write_text(
        yaml.safe_dump(
            {
                "name": NAME,
                "title": {"en": "UI run check", "zh": "界面启动检查"},
                "playbook": str(playbook),
                "environment": "lab",
                "schedules": [{"cron": "0 3 1 1 *", "active": False}],
            },
            allow_unicode=True,
        )
    )
    log = where / "serve.log"
    out = log.open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "drctl"), "serve", str(defs)],
        env={**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_LOGGING_LEVEL": "INFO"},
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        start_new_session=True,
    )
    deployment = None
    try:
        deadline = time.monotonic() + 90
        while deployment is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            with client() as c:
                try:
                    deployment = c.read_deployment_by_name(DEPLOYMENT)
                except Exception:
                    time.sleep(0.3)
        yield deployment
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()
        if deployment is not None:
            with client() as c:
                c.delete_deployment(deployment.id)


def wait_final(flow_run_id: UUID, deadline: float = 120) -> Any:
    end = time.monotonic() + deadline
    with client() as c:
        while time.monotonic() < end:
            run = c.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(0.2)
    raise AssertionError(f"flow run {flow_run_id} did not end within {deadline:g}s")


def record_of(home: Path, flow_run_id: UUID) -> Record:
    store = RecordStore(home / "records", home / "locks")
    for path in (home / "records").glob("*.journal.jsonl"):
        first = json.loads(path.read_text().splitlines()[0])
        if first.get("orchestrator", {}).get("prefect_flow_run_id") == str(flow_run_id):
            return store.load(str(first["run_id"]))
    raise AssertionError(f"no record names flow run {flow_run_id}")


def task_runs(flow_run_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with client() as c:
        return list(
            c.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            )
        )


def logs_of(flow_run_id: UUID, expect: str, deadline: float = 20) -> list[str]:
    """The flow run's log messages, once one containing ``expect`` has arrived."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    end = time.monotonic() + deadline
    messages: list[str] = []
    with client() as c:
        while time.monotonic() < end:
            found = c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            messages = [log.message for log in found]
            if any(expect in m for m in messages):
                return messages
            time.sleep(0.3)
    raise AssertionError(f"no log says {expect!r}: {messages}")


def test_a_run_from_the_ui_or_api_must_name_its_operator_and_ticket(served: Any) -> None:
    from prefect.exceptions import PrefectHTTPStatusError

    answers = {}
    with client() as c:
        for label, parameters in {
            "no operator": {"ticket": "CHG-1"},
            "no ticket": {"operator": "Dr. Wang"},
            "blank operator": {"operator": "", "ticket": "CHG-1"},
        }.items():
            try:
                run = c.create_flow_run_from_deployment(served.id, parameters=parameters)
            except PrefectHTTPStatusError as exc:
                answers[label] = (exc.response.status_code, exc.response.text)
            else:
                c.delete_flow_run(run.id)
                answers[label] = (201, "accepted")
    assert {label: code for label, (code, _) in answers.items()} == {
        "no operator": 409,
        "no ticket": 409,
        "blank operator": 409,
    }, answers
    assert "'operator' is a required property" in answers["no operator"][1]
    assert "'ticket' is a required property" in answers["no ticket"][1]


def test_the_run_form_has_top_level_fields_with_chinese_and_english_titles(served: Any) -> None:
    from drills.ops.definitions import load_definitions, shipped_definitions
    from flows.deployments import plan_deployments, runner_deployments

    form = served.parameter_openapi_schema
    properties = form["properties"]
    assert "request" not in properties
    assert {"playbook", "environment", "mode", "operator", "ticket", "objectives"} <= set(
        properties
    )
    assert {"operator", "ticket"} <= set(form["required"])
    assert properties["ticket"]["title"] == "工单 / Ticket"
    assert properties["operator"]["title"] == "执行人 / Operator"
    for name, field in properties.items():
        zh, _, en = str(field["title"]).partition(" / ")
        assert zh and en and re.search(r"[\u4e00-\u9fff]", zh), (name, field["title"])
        assert field.get("description"), name
    # Choices of what was known where the deployment was made; no "type None" toggles.
    assert "pg-failover" in properties["playbook"]["enum"]
    assert PLAYBOOK["name"] not in properties["playbook"]["enum"]  # it is offered by its file
    assert any(p.endswith("ui-run-check.yaml") for p in properties["playbook"]["enum"])
    assert "lab" in properties["environment"]["enum"]
    assert properties["mode"]["enum"] == ["drill", "real"]
    assert "rto" in properties["objectives"]["properties"]
    assert '"null"' not in json.dumps(form) and "anyOf" not in json.dumps(form)
    assert "incident_declared_at" not in properties
    # The emergency activation's form adds the incident's fields.
    loaded, _ = load_definitions([shipped_definitions() / "emergency-activation.yaml"])
    [activation] = runner_deployments(plan_deployments(loaded, datetime.now(UTC).date()))
    incident = activation._parameter_openapi_schema.properties
    assert incident["incident_declared_at"]["title"] == "事件宣布时间 / Incident declared at"
    assert incident["declared_by"]["title"] == "宣布人 / Declared by"


def test_a_ui_run_records_who_and_shows_each_step_and_check(served: Any, lab: Path) -> None:
    from prefect.deployments import run_deployment

    flow_run = run_deployment(
        DEPLOYMENT,
        parameters={"operator": "Dr. Wang (DBA)", "ticket": "CHG-2026-7"},
        timeout=120,
    )
    flow_run = wait_final(flow_run.id)
    record = record_of(lab, flow_run.id)

    # Who: the person the form named; the OS account apart, never as the person.
    assert record.request["operator"] == "Dr. Wang (DBA)"
    assert record.request["ticket"] == "CHG-2026-7"
    assert record.orchestrator["os_user"] == getpass.getuser()
    assert record.orchestrator["started_by"] == "Prefect UI or API"
    assert record.orchestrator["prefect_deployment_id"] == str(served.id)
    assert record.orchestrator["watched_by"] == "prefect"

    # What: the drill failed (one step did not hold); its reason is the run's message.
    assert record.status == "failed"
    assert flow_run.state.is_failed()
    assert flow_run.state.message == f"failed: {record.reason} (record {record.id})"
    runs = task_runs(flow_run.id)
    assert [r.name for r in runs] == [
        "preconditions",
        "ask_primary",
        "standby_is_not_primary",
        "only_for_real",
    ]
    states = {r.name: r.state for r in runs}
    assert states["preconditions"].is_completed()
    assert states["ask_primary"].is_completed()
    failed = next(s for s in record.steps if s.id == "standby_is_not_primary")
    assert failed.status == "failed"
    assert states["standby_is_not_primary"].is_failed()
    assert states["standby_is_not_primary"].message == failed.reason
    assert "pg.is_primary on pg" in failed.reason and "did not hold within 1s" in failed.reason
    assert states["only_for_real"].is_completed()
    assert states["only_for_real"].name == "Skipped"
    assert states["only_for_real"].message == "runs only in real mode"

    # The logs: the SQL run, each check's observed value, expectation and verdict.
    messages = logs_of(flow_run.id, "Finished in state Failed")
    text = "\n".join(messages)
    primary, standby = record.roles["primary"], record.roles["standby"]
    assert f"$ SQL on {primary}: select 41 + 1" in text, text
    assert re.search(
        rf"precondition pg.is_primary on {primary}: observed .+, expected .+: held", text
    ), text
    assert re.search(rf"check pg.is_primary on {standby}: observed .+, expected .+: ", text), text
    assert "step standby_is_not_primary failed in " in text
    assert "step only_for_real skipped" in text
    assert "Traceback" not in text and "NoneType: None" not in text, text


def test_prefect_deployment_run_with_params(served: Any, lab: Path, prefect_api: str) -> None:
    prefect = Path(sys.executable).parent / "prefect"
    result = subprocess.run(
        [
            str(prefect),
            "deployment",
            "run",
            DEPLOYMENT,
            "--param",
            "ticket=CHG-9",
            "--param",
            "operator=Zhang San",
        ],
        env={**os.environ, "PREFECT_API_URL": prefect_api},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout)
    assert match, result.stdout
    flow_run = wait_final(UUID(match.group(1)))
    record = record_of(lab, flow_run.id)
    assert (record.request["ticket"], record.request["operator"]) == ("CHG-9", "Zhang San")


def test_a_refused_drill_ends_failed_with_its_reason_and_no_traceback(served: Any) -> None:
    from prefect.deployments import run_deployment

    # The form offers the overrides some playbook offers; this playbook offers none.
    flow_run = run_deployment(
        DEPLOYMENT,
        parameters={"operator": "Li", "ticket": "CHG-3", "overrides": ["unfenced_promotion"]},
        timeout=120,
    )
    flow_run = wait_final(flow_run.id)
    assert flow_run.state.is_failed()
    message = flow_run.state.message or ""
    assert "unfenced_promotion" in message, message
    text = "\n".join(logs_of(flow_run.id, "Finished in state Failed"))
    assert "Traceback" not in text, text
    assert task_runs(flow_run.id) == []  # nothing ran
