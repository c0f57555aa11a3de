"""Real runs on a protected environment wait for a typed approval: granted, denied and timed
out, each driven through Prefect's API; and the same approval given on the CLI."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.engine.runner import RunRequest
from drills.executors.postgres import SqlExecutor
from drills.lab.onehost import Lab
from drills.model.record import Record
from drills.records.store import RecordStore
from tests.helpers import drctl, paused_flow_run, run_in_thread

pytestmark = [pytest.mark.lab, pytest.mark.prefect]

PLAYBOOK = {
    "name": "marker",
    "version": 1,
    "kind": "inspection",
    "title": {"en": "Write a marker", "zh": "写入标记"},
    "roles": ["primary"],
    "preconditions": [{"check": "pg.is_primary", "target": "primary"}],
    "steps": [
        {
            "id": "write_marker",
            "action": "sql",
            "target": "primary",
            "with": {"statement": "create table if not exists approval_marker (x int)"},
        }
    ],
}


@pytest.fixture
def protected(lab: Path, tmp_path: Path) -> tuple[Path, Path]:
    data = yaml.safe_load((lab / "environments" / "lab.yaml").read_text())
    data.update(name="lab-prod", protected=True)
    env = tmp_path / "lab-prod.yaml"
    env.write_text(yaml.safe_dump(data))
    playbook = tmp_path / "marker.yaml"
    playbook.write_text(yaml.safe_dump(PLAYBOOK, allow_unicode=True))
    marker_exists(lab, drop=True)
    return env, playbook


def primary_sql(home: Path) -> SqlExecutor:
    primary = next(n for n in Lab(home).status() if n.role == "primary")
    return SqlExecutor(primary.dsn, host=primary.name)


def marker_exists(home: Path, *, drop: bool = False) -> bool:
    sql = primary_sql(home)
    if drop:
        sql.query("drop table if exists approval_marker")
    return bool(sql.scalar("select count(*) from pg_tables where tablename = 'approval_marker'"))


def finish(thread: threading.Thread, out: dict[str, Any], home: Path) -> Record:
    thread.join(timeout=120)
    assert not thread.is_alive(), "the drill did not finish"
    assert "error" not in out, out.get("error")
    return RecordStore(home / "records", home / "locks").load(out["id"])


def form(**changes: Any) -> dict[str, Any]:
    return {
        "approver": "Dr. Li (IT director)",
        "ticket": "CHG-2026-1127",
        "environment_confirmation": "lab-prod",
        "reason": "quarterly switchover drill on production",
        "approve": True,
        **changes,
    }


def test_an_approval_through_the_ui_lets_the_run_go_on(
    lab: Path, protected: tuple[Path, Path], prefect_api: str
) -> None:
    from prefect.flow_runs import resume_flow_run

    env, playbook = protected
    thread, out = run_in_thread(
        RunRequest(playbook=str(playbook), environment=str(env), mode="real")
    )
    resume_flow_run(paused_flow_run(str(playbook), 60), run_input=form())
    record = finish(thread, out, lab)
    assert record.status == "passed", record.reason
    assert record.approval is not None and record.approval["approver"] == "Dr. Li (IT director)"
    assert record.approval["via"] == "prefect-ui"
    assert len(record.preconditions) == 2  # asked again after the approval
    assert record.preconditions[0].at < record.preconditions[1].at
    assert marker_exists(lab)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"approve": False}, "approval denied by Dr. Li"),
        ({"environment_confirmation": "lab"}, "typed 'lab', not the environment's name"),
    ],
)
def test_a_denied_or_mistyped_approval_changes_nothing(
    lab: Path, protected: tuple[Path, Path], prefect_api: str, changes: dict[str, Any], why: str
) -> None:
    from prefect.flow_runs import resume_flow_run

    env, playbook = protected
    thread, out = run_in_thread(
        RunRequest(playbook=str(playbook), environment=str(env), mode="real")
    )
    resume_flow_run(paused_flow_run(str(playbook), 60), run_input=form(**changes))
    record = finish(thread, out, lab)
    assert record.status == "aborted"
    assert why in record.reason and "nothing was changed" in record.reason
    assert record.steps == []
    assert not marker_exists(lab)


def test_an_approval_that_never_comes_times_out(
    lab: Path, protected: tuple[Path, Path], prefect_api: str
) -> None:
    env, playbook = protected
    thread, out = run_in_thread(
        RunRequest(playbook=str(playbook), environment=str(env), mode="real", approval_timeout=2)
    )
    paused_flow_run(str(playbook), 60)
    record = finish(thread, out, lab)
    assert record.status == "aborted"
    assert record.reason == "no approval came within 2s; nothing was changed"
    assert not marker_exists(lab)


def test_the_cli_takes_the_approval_as_options(
    lab: Path, protected: tuple[Path, Path], prefect_api: str
) -> None:
    env, playbook = protected
    api = {"PREFECT_API_URL": prefect_api}
    missing = drctl("run", str(playbook), "--env", str(env), "--mode", "real", env=api)
    assert missing.returncode == 2
    assert "--approver, --ticket, --confirm-env, --reason" in missing.stderr
    wrong = drctl(
        "run",
        str(playbook),
        "--env",
        str(env),
        "--mode",
        "real",
        "--approver",
        "Li",
        "--ticket",
        "T-1",
        "--confirm-env",
        "prod",
        "--reason",
        "drill",
        env=api,
    )
    assert wrong.returncode == 3 and "typed 'prod'" in wrong.stdout
    assert not marker_exists(lab)
    good = drctl(
        "run",
        str(playbook),
        "--env",
        str(env),
        "--mode",
        "real",
        "--approver",
        "Li",
        "--ticket",
        "T-1",
        "--confirm-env",
        "lab-prod",
        "--reason",
        "drill",
        env=api,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert marker_exists(lab)
