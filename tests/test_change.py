"""Changes (`kind: change`): updates applied with their update log (更新日志), on both labs.

Every change backs up what it touches and verifies that backup before it applies anything, verifies
itself after, and when a step after the backup fails it rolls back automatically and verifies the
rollback. The two shipped examples run unchanged on the one-host lab and on the two-site lab
(`any_lab`):

- `pg-schema-change`: a column and an index added to the HIS's registration table, after a
  pg_dump of the primary restored into a scratch server and compared row by row; a migration that
  breaks registrations (a check constraint the HIS's inserts violate) is found by the real
  registration after it, and rolled back, and the rollback verified by a registration again;
- `his-app-release`: a release copied to the application's host, its sha256 checked there,
  switched by symlink, and switched back when its verification fails; the same playbook aimed
  at a database node's host, which at the two-site lab is reached only over SSH.

A change whose backup fails never applies. Bad input (no backup, a rollback that undoes no step, an
apply step without verification) is a located error, and nothing runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.engine.loader import load_playbook
from drills.engine.runner import Runner, RunRequest
from drills.model.errors import ValidationFailed
from drills.model.record import Record
from drills.records.store import RecordStore
from tests.helpers import REPO, drctl
from tests.labs import AnyLab
from tests.pg_fixtures import run, sql, steps_of

pytestmark = [pytest.mark.lab]

COLUMN = (
    "select count(*) from pg_attribute where attrelid = 'his.registration'::regclass"
    " and attname = 'triage_level' and not attisdropped"
)
CONSTRAINT = (
    "select count(*) from pg_constraint where conrelid = 'his.registration'::regclass"
    " and conname = 'registration_no_emergency'"
)
UNDO = (
    "alter table his.registration drop constraint if exists registration_no_emergency;"
    " drop index if exists his.registration_triage_level_idx;"
    " alter table his.registration drop column if exists triage_level"
)


def playbook_data(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "playbooks" / f"{name}.yaml").read_text())
    return data


def write(tmp_path: Path, data: dict[str, Any], name: str) -> Path:
    data["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def step(data: dict[str, Any], step_id: str, section: str = "steps") -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in data[section] if s["id"] == step_id)
    return found


def report(lab: AnyLab, record: Record, fmt: str = "html", lang: str = "zh") -> str:
    from drills.reports import render_report

    return render_report(lab.store.sealed(record.id), fmt=fmt, lang=lang).decode()


def visible(html: str) -> str:
    import re

    return re.sub(r"<[^>]+>", " ", html)


# -- the schema change ---------------------------------------------------------------------------


@pytest.fixture
def schema(any_lab: AnyLab) -> Iterator[AnyLab]:
    """A session lab whose registration table is as the HIS made it, before and after."""
    with any_lab.active():
        any_lab.wait_streaming()
        dsn = any_lab.dsn(any_lab.role_of("primary"))
        sql(dsn, UNDO)
        yield any_lab
        sql(any_lab.dsn(any_lab.role_of("primary")), UNDO)


def count(lab: AnyLab, role: str, query: str) -> int:
    return int(sql(lab.dsn(lab.role_of(role)), query)[0][0])


def test_a_schema_change_passes_with_its_backup_verified_and_its_update_log(
    schema: AnyLab,
) -> None:
    lab = schema
    record = run("pg-schema-change", lab.env, ticket="CHG-2026-031", operator="张工")
    assert record.status == "passed", record.reason
    assert not record.rolled_back
    steps = steps_of(record)
    assert [s.id for s in record.steps] == [
        "backup_dump",
        "backup_verify",
        "restore_test",
        "restore_compare",
        "restore_cleanup",
        "apply",
        "verify_service",
    ]
    # The backup is on the primary's host, where the record says, with the sha256 it says
    # (the lab's hosts are this machine: the test may look).
    dump = steps["main:backup_dump"].data
    primary = record.roles["primary"]
    assert dump["host"] == primary and dump["address"] == lab.address_of(primary)
    assert Path(dump["path"]).is_file()
    assert hashlib.sha256(Path(dump["path"]).read_bytes()).hexdigest() == dump["sha256"]
    assert steps["main:backup_verify"].data["checksum_matches"] is True
    compared = steps["main:restore_compare"].data
    assert compared["identical"] and "his.registration" in {t["table"] for t in compared["tables"]}
    assert steps["main:restore_cleanup"].data["removed"]  # the scratch server is gone
    # The change took effect on both servers, and the application still registers patients.
    assert count(lab, "primary", COLUMN) == 1 and count(lab, "standby", COLUMN) == 1
    assert all(c.held for c in steps["main:apply"].checks)
    assert (
        steps["main:apply"]
        .data["statement"]
        .startswith("alter table his.registration add column if not exists triage_level smallint;")
    )
    checks = {c.check for c in steps["main:verify_service"].checks}
    assert checks == {"http.answers", "his.registration_roundtrip", "app.response_time"}

    # The update log: 系统更新记录, who, which ticket, the backup and where it is, what ran.
    html = report(lab, record)
    text = visible(html)
    for words in ("系统更新记录", "更新日志", "更新前备份及其验证", "更新后验证", "CHG-2026-031"):
        assert words in text, words
    assert "张工" in text and dump["path"] in text and dump["sha256"] in text
    assert "更新成功：备份已验证，变更已实施并通过验证。" in text
    assert "add column if not exists triage_level" in text
    assert "原文" not in text
    english = report(lab, record, "md", "en")
    assert "System update record" in english and "Update log" in english


def broken_migration(tmp_path: Path) -> Path:
    """pg-schema-change whose migration also adds a check constraint that every emergency (急诊)
    registration violates: the change itself succeeds, the application then cannot register."""
    data = playbook_data("pg-schema-change")
    step(data, "apply")["with"]["statement"] = (
        "alter table his.registration add column if not exists triage_level smallint;"
        " alter table his.registration add constraint registration_no_emergency"
        " check (department <> '急诊') not valid"
    )
    step(data, "reverse", "rollback")["with"]["statement"] = (
        "alter table his.registration drop constraint if exists registration_no_emergency;"
        " alter table his.registration drop column if exists triage_level"
    )
    # Only the column is checked after the change: the broken constraint is for the
    # application's verification to find.
    step(data, "apply")["verify"] = step(data, "apply")["verify"][:1]
    step(data, "verify_service")["within"] = "1s"
    return write(tmp_path, data, "broken-migration")


def test_a_migration_that_breaks_registration_is_rolled_back_and_the_rollback_verified(
    schema: AnyLab, tmp_path: Path
) -> None:
    lab = schema
    record = run(broken_migration(tmp_path), lab.env, ticket="CHG-2026-032")
    assert record.status == "failed" and record.rolled_back
    assert record.reason.startswith("step verify_service failed")
    assert record.reason.endswith("the drill was rolled back")
    steps = steps_of(record)
    failed = steps["main:verify_service"]
    registration = next(c for c in failed.checks if c.check == "his.registration_roundtrip")
    assert not registration.held and "HTTP 503" in str(registration.observed)
    # The rollback ran in order (the scratch server's, then the reverse, then the verification)
    # and every step of it passed its own checks: the registration works again.
    rollback = [s for s in record.steps if s.phase == "rollback"]
    assert [s.id for s in rollback] == ["remove_scratch", "reverse", "verify_rollback"]
    assert all(s.status == "passed" for s in rollback)
    assert all(c.held for c in steps["rollback:reverse"].checks)
    verified = {c.check: c.held for c in steps["rollback:verify_rollback"].checks}
    assert verified == {"http.answers": True, "his.registration_roundtrip": True}
    assert count(lab, "primary", COLUMN) == 0 and count(lab, "primary", CONSTRAINT) == 0

    text = visible(report(lab, record))
    assert "更新未通过，已自动回退，回退已验证。" in text
    assert "回退与回退验证" in text and "原文" not in text


def test_a_change_whose_backup_fails_never_applies(schema: AnyLab, tmp_path: Path) -> None:
    lab = schema
    data = playbook_data("pg-schema-change")
    step(data, "backup_dump")["with"]["database"] = "no_such_database"
    record = run(write(tmp_path, data, "no-backup"), lab.env)
    assert record.status == "failed" and record.rolled_back
    main = [s.id for s in record.steps if s.phase == "main"]
    assert main == ["backup_dump"]  # nothing after the failed backup ran, the change least
    assert steps_of(record)["main:backup_dump"].status == "failed"
    assert [s for s in record.steps if s.phase == "rollback"] == []  # nothing to undo
    assert count(lab, "primary", COLUMN) == 0
    text = visible(report(lab, record))
    assert "未实施变更：备份或其验证未通过，未做任何改动。" in text and "原文" not in text


# -- the application release ---------------------------------------------------------------------

RELEASE = "2.4.1"


def release_root(lab: AnyLab, suffix: str = "") -> Path:
    return Path(f"/tmp/drctl-his-app/{lab.env}{suffix}")


def tarball(files: dict[str, str], top: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def install(root: Path, owner: str | None = None) -> None:
    """The application as installed before the change: release 2.4.0 in service."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "releases" / "2.4.0" / "conf").mkdir(parents=True)
    (root / "releases" / "2.4.0" / "VERSION").write_text("2.4.0\n")
    (root / "releases" / "2.4.0" / "conf" / "app.properties").write_text("db=his\n")
    (root / "current").symlink_to("releases/2.4.0")
    if owner is not None:
        for path in [root, *root.rglob("*")]:
            os.lchown(path, *_ids(owner))


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def deliver(lab: AnyLab, *, damaged: bool = False) -> str:
    """The vendor's delivery on the orchestrator: the tarball and its sha256 file, under
    $DRCTL_HOME/releases/. Returns the sha256."""
    artifact = tarball(
        {"VERSION": f"{RELEASE}\n", "conf/app.properties": "db=his\npool=20\n", "bin/start": "#!"},
        f"his-app-{RELEASE}",
    )
    digest = hashlib.sha256(artifact).hexdigest()
    folder = lab.home / "releases"
    folder.mkdir(exist_ok=True)
    (folder / f"his-app-{RELEASE}.tar.gz").write_bytes(artifact + (b"!" if damaged else b""))
    (folder / f"his-app-{RELEASE}.tar.gz.sha256").write_text(
        f"{digest}  his-app-{RELEASE}.tar.gz\n"
    )
    return digest


@pytest.fixture
def app(any_lab: AnyLab) -> Iterator[AnyLab]:
    with any_lab.active():
        install(release_root(any_lab))
        deliver(any_lab)
        yield any_lab
        shutil.rmtree(release_root(any_lab), ignore_errors=True)


def test_a_release_is_backed_up_copied_checked_and_switched(app: AnyLab) -> None:
    lab = app
    root = release_root(lab)
    digest = deliver(lab)
    record = run("his-app-release", lab.env, ticket="CHG-2026-040")
    assert record.status == "passed", record.reason
    steps = steps_of(record)
    # The backup: what current pointed at, copied aside and checksummed, its manifest checked.
    backup = steps["main:backup_release"].data
    assert backup["verified"] and backup["paths"][0]["link_target"] == "releases/2.4.0"
    assert backup["paths"][0]["files"] == 2 and backup["bytes"] == len("2.4.0\ndb=his\n")
    copy = Path(backup["backup_dir"])
    assert copy.parent == root / "backups"
    assert (copy / "1" / "2.4.0" / "VERSION").read_text() == "2.4.0\n"
    sums = (copy / "SHA256SUMS").read_text()
    assert hashlib.sha256(b"2.4.0\n").hexdigest() + "  1/2.4.0/VERSION" in sums
    assert hashlib.sha256(sums.encode()).hexdigest() == backup["manifest_sha256"]
    # The switch: the artifact checked here and there, unpacked, current switched to it.
    switch = steps["main:switch"].data
    assert switch["artifact"]["sha256"] == digest and switch["artifact"]["checked_on_host"]
    assert switch["previous"] == "releases/2.4.0" and switch["current"] == f"releases/{RELEASE}"
    assert os.readlink(root / "current") == f"releases/{RELEASE}"
    assert (root / "current" / "VERSION").read_text() == f"{RELEASE}\n"
    assert (root / "releases" / "2.4.0" / "VERSION").exists()  # the old release is kept
    assert all(c.held for c in steps["main:switch"].checks)
    current = steps["main:switch"].checks[0].observed
    assert current["current"] == RELEASE and current["files_intact"] is True

    text = visible(report(lab, record))
    assert "系统更新记录" in text and str(copy / "SHA256SUMS") in text and "原文" not in text


def test_a_release_whose_verification_fails_is_switched_back(app: AnyLab, tmp_path: Path) -> None:
    lab = app
    root = release_root(lab)
    data = playbook_data("his-app-release")
    # The new release serves a page the old one did not: it answers 404 here.
    step(data, "verify_service")["verify"].append(
        {"check": "http.answers", "with": {"path": "/triage", "status": 200}}
    )
    step(data, "verify_service")["within"] = "1s"
    record = run(write(tmp_path, data, "release-404"), lab.env)
    assert record.status == "failed" and record.rolled_back
    steps = steps_of(record)
    assert steps["main:verify_service"].status == "failed"
    rollback = [s for s in record.steps if s.phase == "rollback"]
    assert [s.id for s in rollback] == ["switch_back", "verify_rollback"]
    assert all(s.status == "passed" for s in rollback)
    back = steps["rollback:switch_back"].data
    assert back["from"] == f"releases/{RELEASE}" and back["to"] == "releases/2.4.0"
    assert back["removed"] == f"{root}/releases/{RELEASE}"
    verified = steps["rollback:verify_rollback"].checks
    assert all(c.held for c in verified) and verified[0].observed["current"] == "2.4.0"
    # On the host: the previous release is current again, the new one is gone.
    assert os.readlink(root / "current") == "releases/2.4.0"
    assert not (root / "releases" / RELEASE).exists()
    text = visible(report(lab, record))
    assert "更新未通过，已自动回退，回退已验证。" in text and "原文" not in text


def test_a_release_whose_backup_or_artifact_fails_is_never_switched(
    app: AnyLab, tmp_path: Path
) -> None:
    lab = app
    root = release_root(lab)
    data = playbook_data("his-app-release")
    step(data, "backup_release")["with"]["paths"] = [f"{root}/no-such-file"]
    record = run(write(tmp_path, data, "release-no-backup"), lab.env)
    assert record.status == "failed" and [s.id for s in record.steps] == ["backup_release"]
    assert "no such file or directory" in record.steps[0].reason
    assert os.readlink(root / "current") == "releases/2.4.0"
    assert not (root / "backups").exists() or not any((root / "backups").iterdir())

    # A damaged artifact: refused before anything on the host changes; the switch back and its
    # verification find the previous release in service.
    deliver(lab, damaged=True)
    record = run("his-app-release", lab.env)
    assert record.status == "failed" and record.rolled_back
    switch = steps_of(record)["main:switch"]
    assert switch.status == "failed" and "it was damaged or is not the release" in switch.reason
    assert all(s.status == "passed" for s in record.steps if s.phase == "rollback")
    assert os.readlink(root / "current") == "releases/2.4.0"
    assert not (root / "releases" / RELEASE).exists()
    assert "原文" not in visible(report(lab, record))


def test_the_release_goes_to_the_nodes_host_over_its_executor(
    any_lab: AnyLab, tmp_path: Path
) -> None:
    """The same release aimed at the standby's host: at the two-site lab that is site B, reached
    only over SSH as its site user; the artifact travels through the executor."""
    with any_lab.active():
        standby = any_lab.role_of("standby")
        node = any_lab.node(standby)
        login = node.ssh.user if node.ssh is not None else None
        root = release_root(any_lab, "-standby")
        install(root, owner=login)
        deliver(any_lab)
        text = (REPO / "playbooks" / "his-app-release.yaml").read_text()
        text = text.replace("/tmp/drctl-his-app/{environment}", str(root))
        data = yaml.safe_load(text)
        data["roles"] = ["standby", "app"]
        for section in ("steps", "rollback"):
            for item in data[section]:
                if item["action"] != "observe":
                    item["target"] = "standby"
        for check in step(data, "switch")["verify"]:
            check["target"] = "standby"
        for check in step(data, "verify_rollback", "rollback")["verify"]:
            if check["check"] == "release.current":
                check["target"] = "standby"
        try:
            record = run(write(tmp_path, data, "release-on-standby"), any_lab.env)
            assert record.status == "passed", record.reason
            for step_id in ("backup_release", "switch"):
                where = steps_of(record)[f"main:{step_id}"].data
                assert where["host"] == standby
                assert where["address"] == any_lab.address_of(standby)
            if any_lab.over_ssh:
                assert any_lab.address_of(standby).startswith(f"{login}@")
                assert (root / "current").resolve().owner() == login
            assert os.readlink(root / "current") == f"releases/{RELEASE}"
            assert (root / "current" / "conf" / "app.properties").read_text() == (
                "db=his\npool=20\n"
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)


# -- bad input: a located error, and nothing runs ------------------------------------------------


def problems(path: Path) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        load_playbook(path)
    return [str(p) for p in caught.value.problems]


def line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_a_change_without_a_backup_is_refused_where_it_applies(tmp_path: Path) -> None:
    data = playbook_data("pg-schema-change")
    data["steps"] = [s for s in data["steps"] if not s["action"].startswith("pg.")]
    data["rollback"] = [s for s in data["rollback"] if s["undoes"] == "apply"]
    path = write(tmp_path, data, "no-backup-step")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:{line_of(path, 'action: sql')} [step apply]: ")
    assert "nothing backs up what it touches before it" in problem


def test_a_backup_step_without_a_target_is_refused(tmp_path: Path) -> None:
    data = playbook_data("his-app-release")
    del step(data, "backup_release")["with"]["paths"]
    path = write(tmp_path, data, "no-paths")
    [problem] = problems(path)
    assert "[step backup_release]" in problem
    assert "action files.backup: missing parameter 'paths'" in problem


def test_a_rollback_that_undoes_no_step_is_refused(tmp_path: Path) -> None:
    data = playbook_data("his-app-release")
    del step(data, "switch_back", "rollback")["undoes"]
    path = write(tmp_path, data, "loose-rollback")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:{line_of(path, '- id: switch_back')} [step switch_back]")
    assert "rollback step switch_back undoes no step" in problem


def test_an_apply_step_without_verification_is_refused(tmp_path: Path) -> None:
    data = playbook_data("pg-schema-change")
    del step(data, "apply")["verify"]
    path = write(tmp_path, data, "unverified")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:{line_of(path, '- id: apply')} [step apply]")
    assert "applies the change (action sql) without verification" in problem


def test_more_at_once_and_nothing_runs(tmp_path: Path, any_lab: AnyLab) -> None:
    data = playbook_data("pg-schema-change")
    del step(data, "apply")["verify"]
    step(data, "verify_service")["on_failure"] = "continue"
    data["rollback"] = [s for s in data["rollback"] if s["id"] != "reverse"]
    del step(data, "verify_rollback", "rollback")["undoes"]
    path = write(tmp_path, data, "all-wrong")
    found = problems(path)
    assert len(found) == 4, found
    assert any("without verification" in p for p in found)
    assert any("no rollback step undoes it (`undoes: apply`)" in p for p in found)
    assert any("[step verify_service]" in p and "must be rollback" in p for p in found)
    assert any("rollback step verify_rollback undoes no step" in p for p in found)
    with any_lab.active():
        before = RecordStore(any_lab.home / "records", any_lab.home / "locks").ids()
        with pytest.raises(ValidationFailed):
            Runner(RunRequest(playbook=str(path), environment=any_lab.env))
        done = drctl("run", str(path), "--env", any_lab.env, home=any_lab.home)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"{path}:" in done.stdout + done.stderr
        assert RecordStore(any_lab.home / "records", any_lab.home / "locks").ids() == before
        assert count(any_lab, "primary", COLUMN) == 0
