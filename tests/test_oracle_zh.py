"""The Chinese report of every Oracle drill holds no English sentence, as a PostgreSQL one.

Each Oracle playbook runs on the stand-in (two real OpenSSH sites, the command-line stand-ins,
the stand-in database: ``tests/test_oracle_drills.py``'s world, whose fixtures and helpers are
imported here), passed and failed or refused, and its zh report is read as a reader sees it:
no run of three English words outside code (commands, host output and the values the database
reports, shown as evidence), and nothing the phrase book did not know (「原文」).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drills.model.record import Record
from drills.records.store import RecordStore
from drills.reports import render_report
from tests.oracle_standin.bin import set_tools, write_backup
from tests.oracle_standin.database import DRCTL_TABLES
from tests.sshd_fixtures import TEST_USER, needs_sshd
from tests.sshd_fixtures import ssh_lab as ssh_lab  # a fixture
from tests.test_oracle_drills import (
    Sites,
    World,
    failover_with_rpo,
    make_world,
    migration_world,
    restore_playbook,
    run,
    steps_of,
)
from tests.test_oracle_drills import secrets as secrets  # a fixture
from tests.test_oracle_drills import sites as sites  # a fixture
from tests.test_report_layout import english_sentences, visible_html, visible_md

pytestmark = needs_sshd


@dataclass
class Drill:
    record: Record
    store: RecordStore


def _switchover(world: World) -> Drill:
    return Drill(*run(world, "oracle-dg-switchover"))


def _switchover_refused_for_lag(world: World) -> Drill:
    world.state.set_lag("his-dr", apply=120.0)
    return Drill(*run(world, "oracle-dg-switchover"))


def _switchover_not_validated(world: World) -> Drill:
    world.state.set_apply("his-dr", False)
    return Drill(*run(world, "oracle-dg-switchover"))


def _failover(world: World) -> Drill:
    return Drill(*run(world, "oracle-dg-failover"))


def _failover_without_flashback(world: World) -> Drill:
    world.state.set("his-pri", flashback_on="NO")
    return Drill(*run(world, "oracle-dg-failover"))


def _failover_refused_while_open(world: World) -> Drill:
    return Drill(*run(world, "oracle-dg-failover", mode="real"))


def _failover_with_transport_lag(world: World) -> Drill:
    # the redo no longer reaches the standby: RPO 0 is missed on the bound
    for table in DRCTL_TABLES:
        world.state.create_table("his-pri", table)
    world.state.set_lag("his-dr", transport=12.0)
    return Drill(*run(world, failover_with_rpo(world, "0s")))


def _failover_under_override(world: World) -> Drill:
    return Drill(*run(world, "oracle-dg-failover", mode="real", overrides=["unfenced_promotion"]))


def _backup_validate(world: World) -> Drill:
    write_backup(world.state, "his-dr", world.backups, owner=TEST_USER)
    return Drill(*run(world, "oracle-rman-backup-validate"))


def _backup_validate_corrupt(world: World) -> Drill:
    write_backup(world.state, "his-dr", world.backups, owner=TEST_USER)
    set_tools(world.state, "corrupt", "his-dr", {"7": {"marked": 0, "failing": {"Data": 3}}})
    return Drill(*run(world, "oracle-rman-backup-validate"))


def _restore_test(world: World) -> Drill:
    write_backup(world.state, "his-pri", world.backups, owner=TEST_USER)
    return Drill(*run(world, restore_playbook(world)))


def _restore_test_rows_differ(world: World) -> Drill:
    write_backup(world.state, "his-pri", world.backups, owner=TEST_USER)
    world.state.write("his-pri", "his.patient", {"id": 41, "name": "新患者", "born": "2020-02-02"})
    return Drill(*run(world, restore_playbook(world)))


def _inspection(world: World) -> Drill:
    return Drill(*run(world, "oracle-inspection"))


def _activation(world: World) -> Drill:
    return Drill(*run(world, "his-emergency-activation", ack=True))


def _activation_without_flashback(world: World) -> Drill:
    world.state.set("his-pri", flashback_on="NO")
    return Drill(*run(world, "his-emergency-activation", ack=True))


def _activation_refused_while_open(world: World) -> Drill:
    return Drill(*run(world, "his-emergency-activation", mode="real", ack=True))


# name -> (how the world is set and the drill run, the statuses the record may have)
CASES: dict[str, tuple[Callable[[World], Drill], set[str]]] = {
    "switchover": (_switchover, {"passed"}),
    "switchover-refused-apply-lag": (_switchover_refused_for_lag, {"aborted"}),
    "switchover-refused-not-validated": (_switchover_not_validated, {"aborted"}),
    "failover": (_failover, {"passed"}),
    "failover-without-flashback": (_failover_without_flashback, {"passed"}),
    "failover-refused-open-read-write": (_failover_refused_while_open, {"aborted"}),
    "failover-transport-lag": (_failover_with_transport_lag, {"failed"}),
    "failover-under-override": (_failover_under_override, {"failed", "passed"}),
    "rman-backup-validate": (_backup_validate, {"passed"}),
    "rman-backup-validate-corrupt": (_backup_validate_corrupt, {"failed"}),
    "rman-restore-test": (_restore_test, {"passed"}),
    "rman-restore-test-rows-differ": (_restore_test_rows_differ, {"failed"}),
    "inspection": (_inspection, {"passed", "failed"}),
    "activation": (_activation, {"passed"}),
    "activation-without-flashback": (_activation_without_flashback, {"failed"}),
    "activation-refused-open-read-write": (_activation_refused_while_open, {"aborted"}),
}


@pytest.fixture
def oracle_world(sites: Sites, tmp_path: Path, secrets: None) -> Iterator[World]:
    made = make_world(sites, tmp_path)
    yield made
    shutil.rmtree(made.root, ignore_errors=True)


def english_left(drill: Drill) -> dict[str, list[str]]:
    """What a reader of the zh report would see in English, per format: runs of three English
    words, and the originals the phrase book did not know (quoted as 「原文」)."""
    sealed = drill.store.sealed(drill.record.id)
    page = render_report(sealed, fmt="html", lang="zh").decode()
    md = render_report(sealed, fmt="md", lang="zh").decode()
    found: dict[str, list[str]] = {}
    for what, text in (("html", visible_html(page)), ("md", visible_md(md))):
        left = english_sentences(text)
        left += [f"原文 at …{text[max(0, at - 80) : at + 200]}…" for at in _marks(text)]
        if left:
            found[what] = left
    return found


def zh_page(drill: Drill) -> str:
    return render_report(drill.store.sealed(drill.record.id), fmt="html", lang="zh").decode()


def _marks(text: str) -> list[int]:
    found, at = [], text.find("原文")
    while at >= 0:
        found.append(at)
        at = text.find("原文", at + 1)
    return found


@pytest.mark.parametrize("case", list(CASES))
def test_an_oracle_zh_report_holds_no_english_sentence(oracle_world: World, case: str) -> None:
    play, statuses = CASES[case]
    drill = play(oracle_world)
    assert drill.record.status in statuses, (drill.record.status, drill.record.reason)
    assert english_left(drill) == {}


def test_the_oracle_migration_zh_report_holds_no_english_sentence(
    sites: Sites,
    tmp_path: Path,
    secrets: None,
) -> None:
    # passed, and a failed import (the table is there already), which gives the source its
    # writes back; each in a world of its own
    for name, failing in (("passed", False), ("failed-import", True)):
        (tmp_path / name).mkdir()
        made, playbook = migration_world(sites, tmp_path / name)
        try:
            if failing:
                made.state.create_table("his-new", "his.patient")
            drill = Drill(*run(made, playbook))
            if failing:
                assert drill.record.status == "failed", drill.record.reason
                assert steps_of(drill.record)["import_target"].status == "failed"
            else:
                assert drill.record.status == "passed", drill.record.reason
            assert english_left(drill) == {}, name
        finally:
            shutil.rmtree(made.root, ignore_errors=True)


def test_a_refused_login_reads_in_chinese_with_what_to_fix(
    oracle_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIS_DGMGRL_PASSWORD", "Wrong-Dgmgrl-Pw-3301")
    drill = Drill(*run(oracle_world, "oracle-dg-switchover"))
    assert drill.record.status == "aborted"
    assert "ORA-01017" in drill.record.reason
    assert english_left(drill) == {}
    page = zh_page(drill)
    assert "dgmgrl 无法登录" in page and "请检查节点的 dgmgrl_connect" in page
    assert "未做任何改动" in page


@pytest.mark.parametrize("missing", ["home", "tool"])
def test_a_missing_oracle_home_reads_in_chinese(
    sites: Sites,
    tmp_path: Path,
    secrets: None,
    missing: str,
) -> None:
    if missing == "home":
        made = make_world(sites, tmp_path, oracle={"his-dr": {"oracle_home": "/u01/nowhere/db"}})
        said = "不存在 ORACLE_HOME"
    else:
        made = make_world(sites, tmp_path, tools={"his-dr": ("rman", "sqlplus")})
        said = "不可执行"
    try:
        drill = Drill(*run(made, "oracle-dg-switchover"))
        assert drill.record.status == "aborted"
        assert english_left(drill) == {}
        assert said in zh_page(drill) and "未执行任何命令" in zh_page(drill)
    finally:
        shutil.rmtree(made.root, ignore_errors=True)


def test_database_values_are_shown_as_evidence(oracle_world: World) -> None:
    """What V$DATABASE and DGMGRL report is quoted as code, not translated or left bare."""
    drill = Drill(*run(oracle_world, "oracle-dg-failover", mode="real"))  # refused: still open
    page = zh_page(drill)
    assert '<code class="said">PRIMARY, READ WRITE</code>' in page
    assert '<code class="said">Ready for Failover: Yes</code>' in page
    assert "不能接受写入" in page  # what the check expected, translated
