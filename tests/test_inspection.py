"""The quarterly inspection (巡检) on a real lab: every item observed for real, findings provoked
for real (a session idle in an open transaction, a long statement, an impossible disk threshold,
no backup yet), and the report in the hospital's format rendered from the sealed record.

Runs through the runner without Prefect, on a lab of its own (its own DRCTL_HOME).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pypdf
import pytest
import yaml

from drills.lab.onehost import Lab
from drills.model.record import Record
from tests.helpers import REPO, drctl
from tests.pg_fixtures import (
    dsn_of,
    environment,
    postgres_processes_under,
    private_home,
    run,
    steps_of,
    variant,
)

pytestmark = [pytest.mark.lab]

ITEMS = 14  # checks in playbooks/pg-inspection.yaml


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    with private_home("drctl-inspection-") as home:
        lab = Lab(home)
        lab.up()
        try:
            yield home
        finally:
            lab.down()
            leftovers = postgres_processes_under(home)
            assert not leftovers, leftovers


@pytest.fixture
def primary_dsn(home: Path) -> str:
    return dsn_of(environment(home)["nodes"]["pg1"])


def only(tmp_path: Path, steps: dict[str, dict[str, Any]], name: str) -> Path:
    """pg-inspection with only ``steps``, each check's parameters updated as given."""
    data = yaml.safe_load((REPO / "playbooks" / "pg-inspection.yaml").read_text())
    kept = []
    for step in data["steps"]:
        if step["id"] in steps:
            step["verify"][0]["with"] = {**step["verify"][0].get("with", {}), **steps[step["id"]]}
            kept.append(step)
    data["steps"], data["name"] = kept, name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def observed(record: Record, step: str, index: int = 0) -> Any:
    return steps_of(record)[f"main:{step}"].checks[index].observed


def report(record: Record, fmt: str, lang: str = "zh") -> bytes:
    from drills.home import subdir
    from drills.records.store import RecordStore
    from drills.reports import render_report

    store = RecordStore(subdir("records"), subdir("locks"))
    return render_report(store.sealed(record.id), fmt=fmt, lang=lang)


def test_a_healthy_lab_is_normal_but_for_the_missing_backup_until_one_is_taken(
    home: Path, tmp_path: Path
) -> None:
    record = run("pg-inspection")

    # No backup yet: that one finding fails the inspection, and the reason names it.
    assert record.status == "failed"
    assert "backup_age" in record.reason
    steps = steps_of(record)
    assert {k for k, s in steps.items() if s.status != "passed"} == {"main:backup_age"}
    assert sum(len(s.checks) for s in record.steps) == ITEMS
    backup = observed(record, "backup_age")
    assert backup["found"] == 0 and str(home / "backups" / "lab") == backup["looked_in"]
    assert "no backup found" in steps["main:backup_age"].checks[0].detail

    # Every observation is a real value read from the servers and their hosts.
    disk = observed(record, "primary_disk")
    assert 0 < disk["used_percent"] < 100 and disk["free_bytes"] > 0
    assert disk["size_bytes"] == disk["used_bytes"] + disk["free_bytes"]
    assert disk["path"] == environment(home)["nodes"]["pg1"]["postgres"]["data_dir"]
    wal = observed(record, "primary_wal")
    assert wal["wal_bytes"] >= 16 * 1024 * 1024 and wal["segments"] >= 1
    assert wal["wal_bytes"] == wal["segments"] * 16 * 1024 * 1024
    conns = observed(record, "connections")
    assert conns["connections"] > 0 and conns["max_connections"] == 50
    assert observed(record, "long_sessions")["count"] == 0
    assert observed(record, "idle_in_transaction")["count"] == 0
    settings = observed(record, "standby_settings")
    assert settings["values"] == {
        "data_checksums": "on",
        "fsync": "on",
        "full_page_writes": "on",
        "hot_standby": "on",
        "wal_level": "replica",
    }
    assert observed(record, "standby_replication", 1).startswith("streaming from 127.0.0.1:")

    # The report: the hospital's form, the finding and its handling; a PDF with pages.
    html = report(record, "html").decode()
    for field in ("季度巡检报告", "巡检周期", "巡检时间", "巡检人", "巡检项目", "检查结果", "标准"):
        assert field in html
    assert "异常项与处理建议" in html and "签字" in html
    assert "最近一次备份时间" in html and "未找到备份" in html and "pg-backup-verify" in html
    assert f"本次巡检共 {ITEMS} 项，正常 {ITEMS - 1} 项，异常 1 项" in html
    assert html.count(">异常</td>") == 1 and html.count(">正常</td>") == ITEMS - 1
    assert "使用率 ≤ 85%" in html  # the standard, from the threshold the check recorded
    english = report(record, "md", "en").decode()
    assert "Quarterly inspection report" in english and "no backup found" in english
    pdf = pypdf.PdfReader(io.BytesIO(report(record, "pdf")))
    assert len(pdf.pages) >= 1
    assert "巡检" in "".join(page.extract_text() or "" for page in pdf.pages)

    # A backup taken by drctl's own pg.basebackup: now every item is normal.
    take = run(variant(tmp_path, "pg-backup-verify", name="take", only=["take_backup"]))
    assert take.status == "passed", take.reason
    again = run("pg-inspection")
    assert again.status == "passed", again.reason
    backup = observed(again, "backup_age")
    assert backup["found"] == 1 and 0 <= backup["age_seconds"] < 120
    assert backup["path"] == take.steps[0].data["path"]
    assert f"正常 {ITEMS} 项，异常 0 项" in report(again, "html").decode()


def test_a_session_idle_in_transaction_is_a_finding_that_names_its_pid(
    home: Path, tmp_path: Path, primary_dsn: str
) -> None:
    playbook = only(tmp_path, {"idle_in_transaction": {"max": "1s"}}, "idle")
    with psycopg.connect(primary_dsn, application_name="ward-app") as held:
        held.execute("select count(*) from pg_class")  # opens a transaction, left open
        pid = held.info.backend_pid
        time.sleep(1.5)
        record = run(playbook)
        held.rollback()
    assert record.status == "failed" and "idle_in_transaction" in record.reason
    found = observed(record, "idle_in_transaction")
    assert found["count"] == 1 and found["longest_seconds"] >= 1.0
    session = found["sessions"][0]
    assert session["pid"] == pid and session["application"] == "ward-app"
    assert f"pid {pid}" in steps_of(record)["main:idle_in_transaction"].checks[0].detail
    assert f"pid {pid}" in report(record, "html").decode()

    # Closed: the same inspection finds nothing.
    assert run(playbook).status == "passed"


def test_a_long_statement_is_found_with_its_literals_left_out(
    home: Path, tmp_path: Path, primary_dsn: str
) -> None:
    playbook = only(tmp_path, {"long_sessions": {"max": "1s"}}, "long")
    conn = psycopg.connect(primary_dsn, autocommit=True)
    errors: list[BaseException] = []

    def sleeper() -> None:
        try:
            conn.execute("select pg_sleep(30), 'Zhang San, bed 12'")
        except psycopg.errors.QueryCanceled:
            pass
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    thread = threading.Thread(target=sleeper, daemon=True)
    thread.start()
    try:
        time.sleep(1.5)
        record = run(playbook)
    finally:
        conn.cancel()
        thread.join(10)
        conn.close()
    assert not thread.is_alive() and not errors
    assert record.status == "failed" and "long_sessions" in record.reason
    found = observed(record, "long_sessions")
    assert found["count"] == 1 and found["longest_seconds"] >= 1.0
    session = found["sessions"][0]
    assert session["query"] == "select pg_sleep(?), ?"
    assert "Zhang San" not in report(record, "html").decode()


def test_an_impossible_disk_threshold_is_a_finding(home: Path, tmp_path: Path) -> None:
    playbook = only(tmp_path, {"primary_disk": {"max_used_percent": 0}}, "disk")
    record = run(playbook)
    assert record.status == "failed" and "primary_disk" in record.reason
    check = steps_of(record)["main:primary_disk"].checks[0]
    assert check.verdict == "deviated" and check.observed["used_percent"] > 0
    assert check.expected.startswith("<= 0% used")


def test_the_cli_renders_the_inspection_report(home: Path, tmp_path: Path) -> None:
    record = run(only(tmp_path, {"connections": {}}, "conn"))
    assert record.status == "passed", record.reason
    out = tmp_path / "r.pdf"
    done = drctl("report", record.id, "--format", "pdf", "--out", str(out), home=home)
    assert done.returncode == 0, done.stderr
    assert len(pypdf.PdfReader(io.BytesIO(out.read_bytes())).pages) >= 1
    md = drctl("report", record.id, "--format", "md", "--out", "-", home=home)
    assert md.returncode == 0 and "季度巡检报告" in md.stdout and "主库连接数" in md.stdout
