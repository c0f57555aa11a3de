"""Drill definitions as Prefect deployments: parsing and problems, the schedules (Asia/Shanghai,
the pre-holiday dates, who a scheduled run names), ``drctl serve`` against the session's Prefect
server (schedules active after it stops and after a restart, its own ``NAME-served`` names, and
its refusal of a definition deployed to a work pool), the server rejecting invalid parameters, and
the committed ``prefect.yaml`` (the same as generated, and deployable with ``prefect deploy``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from drills.ops.definitions import load_definitions, shipped_definitions
from flows.deployments import plan_deployments, prefect_yaml
from tests.helpers import REPO, drctl

SHANGHAI = ZoneInfo("Asia/Shanghai")


def write(where: Path, name: str, body: dict[str, Any]) -> Path:
    base = {
        "name": name,
        "title": {"en": name, "zh": "测试"},
        "playbook": "pg-switchover",
        "environment": "nowhere-env",
        "schedules": [{"cron": "0 2 15-21 1,4,7,10 6", "day_or": False}],
    }
    path = where / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**base, **body}, allow_unicode=True, sort_keys=False))
    return path


def line_of(path: Path, text: str) -> int:
    return path.read_text().splitlines().index(text) + 1


# -- definitions and schedules -------------------------------------------------------------------


def test_the_shipped_examples() -> None:
    loaded, broken = load_definitions([shipped_definitions()])
    assert broken == []
    by_name = {item.definition.name: item.definition for item in loaded}
    assert sorted(by_name) == [
        "emergency-activation",
        "half-yearly-onsite-inspection",
        "monthly-restore-test",
        "pre-holiday-backup-verification",
        "pre-holiday-inspection",
        "quarterly-inspection",
        "quarterly-switchover",
    ]
    assert {d.playbook for d in by_name.values()} == {
        "his-emergency-activation",
        "his-stack-inspection",
        "pg-switchover",
        "pg-inspection",
        "pg-backup-verify",
        "pg-dump-restore-verify",
    }
    assert all(s.timezone == "Asia/Shanghai" for d in by_name.values() for s in d.schedules)
    assert by_name["quarterly-switchover"].parameters() == {
        "playbook": "pg-switchover",
        "environment": "lab",
        "mode": "drill",
        "objectives": {"rto": "2m"},
    }
    # A scheduled run says on whose word it runs; a run from the UI or API names its own.
    assert by_name["quarterly-switchover"].scheduled_parameters() == {
        "operator": "schedule of drill definition quarterly-switchover",
        "ticket": "scheduled (quarterly-switchover)",
    }

    plans = {p.name: p for p in plan_deployments(loaded, date(2026, 1, 5))}
    # The emergency activation's form has the incident's fields: it is the activation flow's.
    assert {n for n, p in plans.items() if p.entrypoint == "flows.drill.activation"} == {
        "emergency-activation"
    }
    assert {p.entrypoint for p in plans.values()} == {"flows.drill.drill", "flows.drill.activation"}
    assert plans["quarterly-switchover"].served_name == "quarterly-switchover-served"
    [trigger] = plans["emergency-activation"].triggers
    assert set(trigger["parameters"]) == {
        "playbook", "environment", "mode", "operator", "ticket", "incident_declared_at",
        "declared_by",
    }  # fmt: skip
    [pre_holiday] = plans["pre-holiday-backup-verification"].schedules
    assert pre_holiday.parameters["operator"] == (
        "schedule of drill definition pre-holiday-backup-verification"
    )
    # The 2026 breaks (Feb 15-23, May 1-5, Oct 1-7), 3 working days before each, 09:00 Shanghai.
    assert pre_holiday.rrule == "RDATE:20260212T090000,20260428T090000,20260928T090000"
    assert pre_holiday.timezone == "Asia/Shanghai"
    after = datetime(2026, 1, 5, tzinfo=SHANGHAI)
    assert pre_holiday.next_runs(after, 3) == [
        datetime(2026, 2, 12, 9, tzinfo=SHANGHAI),
        datetime(2026, 4, 28, 9, tzinfo=SHANGHAI),
        datetime(2026, 9, 28, 9, tzinfo=SHANGHAI),
    ]
    # Quarterly: the third Saturday of Jan/Apr/Jul/Oct at 02:00, Shanghai time.
    [quarterly] = plans["quarterly-switchover"].schedules
    assert quarterly.next_runs(after, 2) == [
        datetime(2026, 1, 17, 2, tzinfo=SHANGHAI),
        datetime(2026, 4, 18, 2, tzinfo=SHANGHAI),
    ]
    [monthly] = plans["monthly-restore-test"].schedules
    assert monthly.next_runs(after, 2) == [
        datetime(2026, 2, 7, 3, tzinfo=SHANGHAI),
        datetime(2026, 3, 7, 3, tzinfo=SHANGHAI),
    ]
    [inspection] = plans["quarterly-inspection"].schedules
    # The first Monday of the quarter: 2026-01-05 itself, at 09:00.
    assert inspection.next_runs(after, 2) == [
        datetime(2026, 1, 5, 9, tzinfo=SHANGHAI),
        datetime(2026, 4, 6, 9, tzinfo=SHANGHAI),
    ]


def test_pre_holiday_dates_when_next_year_is_not_published() -> None:
    loaded, _ = load_definitions([shipped_definitions() / "pre-holiday-backup-verification.yaml"])
    [plan] = plan_deployments(loaded, date(2026, 11, 27))
    [schedule] = plan.schedules
    assert schedule.dates == [date(2026, 2, 12), date(2026, 4, 28), date(2026, 9, 28)]
    assert any("the holidays of 2027 are not published" in n for n in plan.notes)
    assert any("the last known pre-holiday date is 2026-09-28" in n for n in plan.notes)


def test_definition_problems_are_located_and_named(tmp_path: Path) -> None:
    write(tmp_path, "good", {})
    write(tmp_path, "no-playbook", {"playbook": "pg-no-such-playbook"})
    write(tmp_path, "bad-objective", {"objectives": {"rto": "2m", "speed": "1s"}})
    write(tmp_path, "bad-cron", {"schedules": [{"cron": "every tuesday"}]})
    write(tmp_path, "two-kinds", {"schedules": [{"cron": "0 1 * * *", "rrule": "FREQ=DAILY"}]})
    write(tmp_path, "bad-zone", {"schedules": [{"cron": "0 1 * * *", "timezone": "Mars/Base"}]})
    write(tmp_path, "bad-mode", {"mode": "yolo"})
    write(tmp_path, "x-served", {})
    (tmp_path / "z-copy.yaml").write_text((tmp_path / "good.yaml").read_text())

    loaded, broken = load_definitions([tmp_path])
    usable = {i.definition.name: i.usable for i in loaded}
    assert usable == {"bad-objective": False, "good": True, "no-playbook": False}
    problems = {Path(p.file).name: str(p) for p in broken}
    assert problems["bad-cron.yaml"].endswith('Invalid cron string: "every tuesday"')
    assert (
        "exactly one of cron, rrule, pre_holiday (this one has cron, rrule)"
        in problems["two-kinds.yaml"]
    )
    assert "unknown time zone 'Mars/Base'" in problems["bad-zone.yaml"]
    line = line_of(tmp_path / "bad-mode.yaml", "mode: yolo")
    assert (
        f"bad-mode.yaml:{line}: mode: Input should be 'drill' or 'real'"
        in problems["bad-mode.yaml"]
    )
    assert "definition name 'good' is used by" in problems["z-copy.yaml"]
    assert (
        "may not end in '-served': drctl serve names its deployments" in problems["x-served.yaml"]
    )
    by_name = {i.definition.name: i for i in loaded}
    [missing] = by_name["no-playbook"].problems
    line = line_of(tmp_path / "no-playbook.yaml", "playbook: pg-no-such-playbook")
    assert str(missing).startswith(f"{tmp_path}/no-playbook.yaml:{line}: definition no-playbook: ")
    assert "no playbook file or shipped playbook named 'pg-no-such-playbook'" in str(missing)
    [objective] = by_name["bad-objective"].problems
    line = line_of(tmp_path / "bad-objective.yaml", "  speed: 1s")
    assert str(objective) == (
        f"{tmp_path}/bad-objective.yaml:{line}: definition bad-objective: objective 'speed' is not "
        "one of playbook pg-switchover's (rto, rpo, write_outage)"
    )
    assert any("'nowhere-env' is not on this host" in n for n in by_name["good"].notes)

    # Listing shows what is usable and names every problem (exit 2); serve --check likewise.
    listed = drctl("deployments", "list", str(tmp_path), "--today", "2026-01-05")
    assert listed.returncode == 2
    assert "good: pg-switchover on nowhere-env (drill)" in listed.stdout
    assert "next: 2026-01-17 02:00, 2026-04-18 02:00" in listed.stdout
    assert "no-playbook ✘ not usable" in listed.stdout
    assert "pg-no-such-playbook" in listed.stderr and "Invalid cron string" in listed.stderr
    assert "Traceback" not in listed.stderr
    checked = drctl("serve", str(tmp_path), "--check")
    assert checked.returncode == 2
    assert "not served (see the problems above): bad-objective, no-playbook" in checked.stdout


def test_a_file_that_is_not_a_definition_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nplaybook: [\n")
    loaded, [problem] = load_definitions([path])
    assert loaded == [] and problem.file == str(path) and "invalid YAML" in problem.message
    result = drctl("serve", str(tmp_path / "missing-dir"), "--check")
    assert result.returncode == 2 and "no such file or folder" in result.stderr


def test_run_request_objectives_replace_the_playbook_targets() -> None:
    from drills.engine.loader import load_playbook, resolve_playbook
    from drills.engine.runner import objectives_with_targets
    from drills.model.errors import InputError

    objectives = load_playbook(resolve_playbook("pg-switchover")).playbook.objectives
    changed = objectives_with_targets(objectives, {"rto": "2m", "write_outage": 7})
    assert changed["rto"].target == 120 and changed["write_outage"].target == 7
    assert changed["rto"].source.startswith("run request (the playbook's target: 60s")
    assert changed["rpo"] == objectives["rpo"]
    with pytest.raises(InputError, match="objective speed is not one of the playbook's"):
        objectives_with_targets(objectives, {"speed": "1s"})
    with pytest.raises(InputError, match="objective rto: 'soon' is not a duration"):
        objectives_with_targets(objectives, {"rto": "soon"})


# -- prefect.yaml --------------------------------------------------------------------------------


def committed_prefect_yaml() -> tuple[str, date]:
    text = (REPO / "prefect.yaml").read_text(encoding="utf-8")
    match = re.search(r"prefect-yaml playbooks/drills --today (\S+) --output prefect.yaml", text)
    assert match, "prefect.yaml does not say how it was generated"
    return text, date.fromisoformat(match.group(1))


def test_the_committed_prefect_yaml_matches_the_definitions() -> None:
    text, day = committed_prefect_yaml()
    loaded, _ = load_definitions([shipped_definitions()])
    expected = prefect_yaml(plan_deployments(loaded, day), day, "playbooks/drills")
    assert text == expected, (
        "prefect.yaml is out of date: run "
        f"`drctl deployments prefect-yaml playbooks/drills --today {day} --output prefect.yaml`"
    )
    check = drctl(
        "deployments", "prefect-yaml", "playbooks/drills", "--today", str(day), "--output",
        "prefect.yaml", "--check",
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


@pytest.mark.prefect
def test_prefect_yaml_deploys_to_a_work_pool(prefect_api: str, tmp_path: Path) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate

    with client() as c:
        c.create_work_pool(WorkPoolCreate(name="drctl", type="process"), overwrite=True)
    text, _ = committed_prefect_yaml()
    (tmp_path / "prefect.yaml").write_text(text)
    prefect = Path(sys.executable).parent / "prefect"
    result = subprocess.run(
        [str(prefect), "--no-prompt", "deploy", "--all"],
        cwd=tmp_path,
        env={**os.environ, "PREFECT_API_URL": prefect_api},
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with client() as c:
        deployment = c.read_deployment_by_name("drill/pre-holiday-backup-verification")
        switchover = c.read_deployment_by_name("drill/quarterly-switchover")
        activation = c.read_deployment_by_name("drill/emergency-activation")
    assert deployment.work_pool_name == "drctl" and deployment.enforce_parameter_schema
    assert deployment.entrypoint == "flows.drill.drill"
    assert deployment.pull_steps == []  # the flow is the installed drctl: nothing to pull
    [schedule] = deployment.schedules
    assert schedule.active and schedule.schedule.timezone == "Asia/Shanghai"
    assert "20260212T090000" in schedule.schedule.rrule
    assert schedule.parameters == {
        "operator": "schedule of drill definition pre-holiday-backup-verification",
        "ticket": "scheduled (pre-holiday-backup-verification)",
    }
    assert switchover.parameters == {
        "playbook": "pg-switchover",
        "environment": "lab",
        "mode": "drill",
        "objectives": {"rto": "2m"},
    }
    [cron] = switchover.schedules
    assert (cron.schedule.cron, cron.schedule.day_or) == ("0 2 15-21 1,4,7,10 6", False)
    assert cron.schedule.timezone == "Asia/Shanghai"
    # The form: top-level fields, the operator and ticket required; the incident's fields only on
    # the activation's.
    form = switchover.parameter_openapi_schema
    assert {"operator", "ticket"} <= set(form["required"])
    assert "incident_declared_at" not in form["properties"]
    assert activation.entrypoint == "flows.drill.activation"
    assert "incident_declared_at" in activation.parameter_openapi_schema["properties"]


# -- drctl serve ---------------------------------------------------------------------------------


class Serving:
    """``drctl serve`` in its own process, stopped by its pid like Ctrl-C stops it."""

    def __init__(self, definitions: Path, api: str, log: Path, **env: str) -> None:
        self.log = log
        self.out = log.open("w")
        exe = Path(sys.executable).parent / "drctl"
        self.proc = subprocess.Popen(
            [str(exe), "serve", str(definitions), "--today", "2026-01-05"],
            env={**os.environ, "PREFECT_API_URL": api, **env},
            stdout=self.out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.out.close()


def wait_applied(names: list[str], since: datetime, serving: Serving) -> dict[str, Any]:
    """The deployments once ``drctl serve`` has (re)applied them all after ``since`` and closed
    their forms (``names`` are the deployments' names: a served one's is NAME-served)."""
    deadline = time.monotonic() + 90
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert serving.proc.poll() is None, serving.log.read_text()
        with client() as c:
            for name in names:
                try:
                    d = c.read_deployment_by_name(f"drill/{name}")
                except Exception:
                    continue
                closed = (d.parameter_openapi_schema or {}).get("additionalProperties") is False
                if d.updated is not None and d.updated >= since and closed:
                    found[name] = d
        if len(found) == len(names):
            return found
        time.sleep(0.3)
    raise AssertionError(f"serve did not apply {names}: {serving.log.read_text()}")


def schedules_of(name: str) -> list[tuple[str | None, bool, str, str]]:
    """The deployment's schedules, once it is known not to be paused."""
    with client() as c:
        d = c.read_deployment_by_name(f"drill/{name}")
    assert d.paused is False, f"{name} was paused"
    found = []
    for s in d.schedules:
        rule = str(getattr(s.schedule, "cron", None) or getattr(s.schedule, "rrule", None))
        # Prefect anchors an RRULE set with a DTSTART line of its own.
        rule = re.sub(r"^DTSTART:\d{8}T\d{6}\n", "", rule)
        found.append((s.slug, s.active, str(s.schedule.timezone), rule))
    return sorted(found)


@pytest.mark.prefect
def test_serve_keeps_schedules_active_across_restarts_and_the_server_validates_parameters(
    prefect_api: str, tmp_path: Path
) -> None:
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    defs = tmp_path / "defs"
    defs.mkdir()
    write(defs, "t-quarterly", {"objectives": {"rto": "90s"}, "ticket": "CHG-1"})
    write(
        defs,
        "t-pre-holiday",
        {"playbook": "pg-failover", "schedules": [{"pre_holiday": {"at": "08:30"}}]},
    )
    write(defs, "t-broken", {"playbook": "pg-no-such-playbook"})
    names = ["t-quarterly-served", "t-pre-holiday-served"]
    rdates = "RDATE:20260212T083000,20260428T083000,20260928T083000"
    expected = [
        [("t-pre-holiday-1", True, "Asia/Shanghai", rdates)],
        [("t-quarterly-1", True, "Asia/Shanghai", "0 2 15-21 1,4,7,10 6")],
    ]

    for round_ in ("first", "restart"):
        since = datetime.now(ZoneInfo("UTC"))
        serving = Serving(defs, prefect_api, tmp_path / f"serve-{round_}.log")
        try:
            applied = wait_applied(names, since, serving)
        finally:
            serving.stop()
        log = serving.log.read_text()
        assert "not served (see the problems above): t-broken" in log
        assert "pg-no-such-playbook" in log
        assert serving.proc.returncode is not None
        # Stopped like Ctrl-C stops it: the schedules stay active (pause_on_shutdown=False),
        # and a restart applies them again without doubling them.
        served = ["t-pre-holiday-served", "t-quarterly-served"]
        assert [schedules_of(n) for n in served] == expected, log
    with client() as c:
        for name in ("t-broken", "t-broken-served", "t-quarterly"):
            with pytest.raises(ObjectNotFound):
                c.read_deployment_by_name(f"drill/{name}")

    quarterly = applied["t-quarterly-served"]
    assert quarterly.work_pool_name is None
    assert quarterly.parameters == {
        "playbook": "pg-switchover",
        "environment": "nowhere-env",
        "mode": "drill",
        "objectives": {"rto": "90s"},
    }
    [scheduled] = quarterly.schedules
    assert scheduled.parameters == {
        "operator": "schedule of drill definition t-quarterly",
        "ticket": "CHG-1",
    }
    assert quarterly.enforce_parameter_schema
    assert quarterly.parameter_openapi_schema["additionalProperties"] is False
    form = quarterly.parameter_openapi_schema["properties"]
    assert {"playbook", "environment", "mode", "ticket", "operator", "objectives"} <= set(form)

    who = {"operator": "Dr. Li", "ticket": "CHG-2"}
    good = {"playbook": "pg-switchover", "environment": "nowhere-env", "mode": "drill", **who}
    bad_parameters = [
        {**good, "mode": "yolo"},
        {**good, "playbook": "pg-no-such-playbook"},
        {**good, "operator": ""},
        {"ticket": "CHG-3"},  # no operator: a run from the UI or the API must name one
        {"operator": "Dr. Li"},  # no ticket
        {**good, "objectives": {"rto": ["not", "a", "duration"]}},
        {**good, "objectives": {"speed": "1s"}},
        {**good, "tiket": "CHG-3"},  # a mistyped name: serve closed the form (close_forms)
    ]
    with client() as c:
        answers = []
        for parameters in bad_parameters:
            try:
                run = c.create_flow_run_from_deployment(quarterly.id, parameters=parameters)
            except PrefectHTTPStatusError as exc:
                answers.append((exc.response.status_code, exc.response.text[:300]))
            else:
                c.delete_flow_run(run.id)
                answers.append((201, str(parameters)))
        assert [code for code, _ in answers] == [409] * len(bad_parameters), answers
        assert all("Validation failed" in text for _, text in answers), answers
        with pytest.raises(PrefectHTTPStatusError) as rejected:
            c.update_deployment(quarterly.id, DeploymentUpdate(parameters={"mode": "yolo"}))
        assert rejected.value.response.status_code == 409
        accepted = c.create_flow_run_from_deployment(quarterly.id, parameters=who)
        try:
            assert accepted.parameters["ticket"] == "CHG-2"
            assert accepted.parameters["operator"] == "Dr. Li"
        finally:
            c.delete_flow_run(accepted.id)  # nobody serves it: it would never run


@pytest.mark.prefect
def test_serve_refuses_a_definition_that_a_work_pool_owns(prefect_api: str, tmp_path: Path) -> None:
    """``prefect deploy`` makes drill/NAME on a work pool; ``drctl serve`` names its own
    drill/NAME-served and will not serve a definition deployed to a pool (its drills would run
    twice), nor take over a NAME-served that a pool owns. So neither path takes over the other's
    deployments: the UI shows who runs each."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    from flows.deployments import runner_deployments

    with client() as c:
        c.create_work_pool(WorkPoolCreate(name="drctl", type="process"), overwrite=True)
    defs = tmp_path / "defs"
    defs.mkdir()
    write(defs, "t-owned", {})
    write(defs, "t-free", {})
    loaded, _ = load_definitions([defs / "t-owned.yaml"])
    [plan] = plan_deployments(loaded, date(2026, 1, 5))
    # What `prefect deploy` makes of it: drill/t-owned on the work pool.
    [pooled] = runner_deployments([plan])
    pooled.name, pooled.work_pool_name = plan.name, "drctl"
    pooled_id = pooled.apply()
    try:
        since = datetime.now(ZoneInfo("UTC"))
        serving = Serving(defs, prefect_api, tmp_path / "serve.log")
        try:
            applied = wait_applied(["t-free-served"], since, serving)
            time.sleep(1)
        finally:
            serving.stop()
        log = serving.log.read_text()
        assert "not served: t-owned: deployment drill/t-owned is on work pool drctl" in log, log
        assert "would run its drills twice" in log
        assert applied["t-free-served"].work_pool_name is None
        with client() as c:
            owned = c.read_deployment_by_name("drill/t-owned")
            assert owned.work_pool_name == "drctl"  # not taken over
            with pytest.raises(ObjectNotFound):
                c.read_deployment_by_name("drill/t-owned-served")
    finally:
        with client() as c:
            c.delete_deployment(pooled_id)
