"""Reports an assessor signs without editing: all-Chinese zh records, the site's details, the
standard clauses with their numbers, a timeline and a trend that read well, PDFs without
footer-only pages, and CLI tables that keep record ids whole at 80 columns.

Records are made by the real runner without a lab: shell steps on 127.0.0.1
(``tests.test_records_support``), and the PostgreSQL checks of ``verify.postgres`` and
``verify.inspection`` asked of fake SQL sessions and a fake host whose answers the test sets, so
every expectation, observation and sentence in them is the one the real code writes.
"""

from __future__ import annotations

import html as html_lib
import io
import json
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pypdf
import pytest
import yaml

from drills.engine.catalogue import ActionResult, ActionSpec, Catalogue, Params, build_catalogue
from drills.engine.loader import load_playbook
from drills.engine.runner import Runner
from drills.executors.host import CommandResult, PosixHost
from drills.model.environment import Environment, Node
from drills.model.errors import CommandFailed, ConnectionFailed
from drills.model.record import Record, build_record
from drills.model.request import RunRequest
from drills.records.store import RecordStore
from drills.reports import render_report, render_trend
from drills.reports.view import ReportInput
from tests.helpers import REPO, drctl
from tests.test_records_support import home_env, make_home, outcome_records

# -- what "no English sentence" means -------------------------------------------------------

# Tokens that are not words of a sentence even when they are letters only: units and names.
NOT_WORDS = {"ms", "s", "B", "KiB", "MiB", "GiB", "TiB", "HTTP", "SHA", "RTO", "RPO", "WAL"}
# Product names of several words are names, as a node name is: the zh titles of the Oracle
# playbooks say "Oracle Data Guard 计划内主备切换", as Oracle's own Chinese documentation does.
PRODUCT_NAMES = ("Oracle Data Guard", "Data Guard Broker", "Data Guard", "Oracle RMAN")
_PRODUCT = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in PRODUCT_NAMES) + r")\b")
_CJK = re.compile(r"[\u2e80-\u9fff\u3000-\u303f\uff00-\uffef]")
_WORD = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*")


def english_sentences(text: str) -> list[str]:
    """Every run of 3+ consecutive English words in ``text``. Identifiers (node names, check
    ids such as pg.is_primary, milestone ids, file paths, hashes, ISO times, numbers with units)
    are not words: they hold digits, dots, underscores, slashes or colons inside."""
    found, run = [], []
    text = _PRODUCT.sub(lambda name: name.group(0).replace(" ", "_"), text)
    for token in _CJK.sub(" | ", text).split():
        bare = token.strip(",;:.!?()[]{}\"'`")
        if _WORD.fullmatch(bare) and bare not in NOT_WORDS:
            run.append(bare)
            continue
        if len(run) >= 3:
            found.append(" ".join(run))
        run = []
    if len(run) >= 3:
        found.append(" ".join(run))
    return found


def visible_html(page: str) -> str:
    """The text a reader sees, without code (commands, host output: evidence shown as is)."""
    page = re.sub(r"<(head|pre|code)\b.*?</\1>", " ", page, flags=re.S)
    page = re.sub(r"<title>.*?</title>", " ", page, flags=re.S)
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", page))


def visible_md(text: str) -> str:
    text = re.sub(r"<code>.*?</code>", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"<[^>]+>", " ", text)
    return html_lib.unescape(text.replace("\\", ""))


def test_the_sentence_detector_finds_sentences_and_spares_identifiers() -> None:
    assert english_sentences("结论：every step passed its checks") == [
        "every step passed its checks"
    ]
    assert english_sentences("校验 pg.is_primary（节点 db1）app1 20261201T225646Z-a-b 0.3s") == []
    assert english_sentences("Asia/Shanghai (UTC+08:00) 1.0 MiB two words") == []
    assert english_sentences("Oracle Data Guard 故障切换；Data Guard Broker 状态") == []
    # a product name is one name: the English around it is still found
    assert english_sentences("Oracle Data Guard failed over cleanly") == ["failed over cleanly"]


# -- a small PostgreSQL world: fake sessions and host, the real checks -----------------------


@dataclass
class World:
    roles: dict[str, str]  # node -> primary, standby or down
    streaming: bool = True
    read_only_writes: bool = False  # the promoted node refuses writes
    settings: dict[str, str] = field(
        default_factory=lambda: {
            "fsync": "on",
            "full_page_writes": "on",
            "wal_level": "replica",
            "data_checksums": "off",
        }
    )


class FakeSql:
    """A node's SQL session answering the queries of verify.postgres and verify.inspection."""

    def __init__(self, world: World, name: str) -> None:
        self.world, self.host = world, name

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> list[tuple[Any, ...]]:
        role = self.world.roles[self.host]
        if role == "down":
            raise ConnectionFailed("connection refused", host=self.host)
        answers: list[tuple[str, list[tuple[Any, ...]]]] = [
            ("pg_is_in_recovery() or current_setting", [(role == "standby",)]),
            ("pg_is_in_recovery()", [(role == "standby",)]),
            ("pg_stat_wal_receiver", [("streaming", "127.0.0.2", 5432)] if self.streaming else []),
            ("pg_current_wal_lsn", [("0/3000060",)]),
            ("pg_wal_lsn_diff", [(0, 0.0, True)]),
            ("pg_ls_waldir", [(3 * 16 * 1024 * 1024, 3)]),
            ("pg_ls_archive_statusdir", [(0,)]),
            ("max_connections", [(7, 100, 3)]),
            ("state = 'active'", []),
            ("idle in transaction", []),
            ("pg_settings", list(self.world.settings.items())),
        ]
        if "insert into drctl.heartbeat" in sql:
            if role != "primary" or self.world.read_only_writes:
                raise CommandFailed(
                    "cannot execute INSERT in a read-only transaction", returncode=1, host=self.host
                )
            return []
        for needle, rows in answers:
            if needle in sql:
                return rows
        raise AssertionError(f"unexpected query on {self.host}: {sql}")

    @property
    def streaming(self) -> bool:
        return self.world.streaming

    def scalar(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        rows = self.query(sql, params, timeout=timeout)
        return rows[0][0] if rows else None

    def close(self) -> None:
        return None


GIB = 1024**3


class FakeHost(PosixHost):
    """A node's host answering df, stat and the backup search."""

    def __init__(self, name: str) -> None:
        self.host = name

    @property
    def address(self) -> str:
        return f"fake@{self.host}"

    def describe(self, argv: Sequence[str], user: str | None = None) -> str:
        return " ".join(argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        timeout: float = 60.0,
        check: bool = True,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        input: str | None = None,
    ) -> CommandResult:
        text = " ".join(argv)
        answers = {
            "df -P -B1": f"Filesystem 1-blocks Used Available Capacity Mounted on\n"
            f"/dev/vdb {100 * GIB} {30 * GIB} {60 * GIB} 34% /srv\n",
            "df -P -i": "Filesystem Inodes IUsed IFree IUse% Mounted on\n"
            "/dev/vdb 1000 10 990 1% /srv\n",
            "stat -c %m": "/srv\n",
            "backup_manifest": "1700003600\n",  # the host's clock, and no backup found
        }
        for needle, out in answers.items():
            if needle in text:
                return CommandResult(tuple(argv), 0, out, "", 0.01)
        raise AssertionError(f"unexpected command on {self.host}: {text}")


class FakeConnector:
    def __init__(self, world: World) -> None:
        self.world = world

    def host(self, name: str, node: Node) -> FakeHost:
        return FakeHost(name)

    def sql(self, name: str, node: Node) -> FakeSql:
        return FakeSql(self.world, name)

    def http(self, name: str, node: Node) -> Any:
        raise AssertionError("no HTTP here")


class RoleParams(Params):
    pass


def _set(role_after: str) -> Any:
    def run(targets: Any, role: str, params: Params, timeout: float) -> ActionResult:
        name, _ = targets.node(role)
        targets.connector.world.roles[name] = role_after
        return ActionResult(f"{name} is {role_after}")

    return run


def _pause(targets: Any, role: str, params: Params, timeout: float) -> ActionResult:
    time.sleep(0.05)
    return ActionResult("paused")


def lab_catalogue() -> Catalogue:
    catalogue = build_catalogue()
    catalogue.add_actions(
        ActionSpec("lab.pause", RoleParams, _pause, lambda t, r, p: [], False, "pause"),
        ActionSpec("lab.stop", RoleParams, _set("down"), lambda t, r, p: [], True, "stop"),
        ActionSpec("lab.promote", RoleParams, _set("primary"), lambda t, r, p: [], True, "promote"),
        ActionSpec("lab.start", RoleParams, _set("primary"), lambda t, r, p: [], True, "start"),
    )
    return catalogue


PG = {"data_dir": "/srv/pg/main", "bin_dir": "/usr/lib/postgresql/17/bin", "os_user": "postgres"}
ENV = {
    "name": "his-lab",
    "nodes": {
        "db1": {"role": "primary", "host": "127.0.0.2", "postgres": PG},
        "db2": {"role": "standby", "host": "127.0.0.3", "postgres": PG},
    },
}
SOURCE = "lab target; set the site's own from its GB/T 20988 level"


def switchover(*, declare: bool = False, more: dict[str, Any] | None = None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    if declare:
        steps.append(
            {
                "id": "declare_incident",
                "title": {"en": "Incident declared", "zh": "宣布突发事件"},
                "action": "incident.declared",
                "target": "primary",
                "milestone": "incident_declared",
            }
        )
    steps += [
        {
            "id": "stop_primary",
            "title": {"en": "Stop the primary", "zh": "停止主库"},
            "action": "lab.stop",
            "target": "primary",
            "verify": [{"check": "pg.rejects_writes"}],
            "within": "1s",
            "poll": "10ms",
            "milestone": "outage_started",
            "milestone_at": "started",
            "on_failure": "rollback",
        },
        {
            "id": "promote_standby",
            "title": {"en": "Promote the standby", "zh": "提升备库为主库"},
            "action": "lab.promote",
            "target": "standby",
            "verify": [{"check": "pg.is_primary"}, {"check": "pg.takes_writes"}],
            "within": "300ms",
            "poll": "10ms",
            "milestone": "writes_restored",
            "milestone_at": "converged",
            "on_failure": "rollback",
        },
        *(
            [{"id": "wait_for_clients", "action": "lab.pause", "target": "standby"}]
            if declare
            else []
        ),
        {
            "id": "verify_service",
            "title": {"en": "Verify writes", "zh": "验证业务写入"},
            "action": "observe",
            "target": "standby",
            "verify": [{"check": "pg.takes_writes"}],
            "within": "300ms",
            "poll": "10ms",
            "milestone": "service_restored",
            "milestone_at": "converged",
        },
    ]
    body: dict[str, Any] = {
        "name": "lab-switchover",
        "version": 1,
        "kind": "switchover",
        "title": {"en": "Lab switchover", "zh": "模拟主备切换"},
        "roles": ["primary", "standby"],
        "objectives": {
            "rto": {
                "target": "60s",
                "from": "outage_started",
                "to": "service_restored",
                "source": SOURCE,
            }
        },
        "preconditions": [
            {"check": "pg.is_primary", "target": "primary"},
            {"check": "pg.streaming", "target": "standby", "with": {"source": "primary"}},
            {
                "check": "pg.replay_lag",
                "target": "standby",
                "with": {"primary": "primary", "max": "1s", "max_bytes": 1048576},
            },
        ],
        "steps": steps,
        "rollback": [
            {
                "id": "restart_old_primary",
                "title": {"en": "Restart the old primary", "zh": "重新启动原主库"},
                "undoes": "stop_primary",
                "action": "lab.start",
                "target": "primary",
                "verify": [{"check": "pg.is_primary"}],
                "within": "1s",
                "poll": "10ms",
            }
        ],
    }
    return body | (more or {})


def inspection_playbook() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "playbooks" / "pg-inspection.yaml").read_text())
    keep = {
        "primary_role",
        "standby_replication",
        "replication_lag",
        "primary_disk",
        "connections",
        "long_sessions",
        "idle_in_transaction",
        "backup_age",
        "primary_settings",
    }
    data["steps"] = [s for s in data["steps"] if s["id"] in keep]
    for step in data["steps"]:
        step["within"], step["poll"] = "100ms", "10ms"
    data["name"] = "lab-inspection"
    return data


def run_lab(
    home: Path, body: dict[str, Any], world: World, request: dict[str, Any] | None = None
) -> Record:
    catalogue = lab_catalogue()
    path = home / f"{body['name']}.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return Runner(
        RunRequest(playbook=str(path), environment="his-lab", **(request or {})),
        loaded=load_playbook(path, catalogue),
        env=Environment.model_validate(ENV),
        catalogue=catalogue,
        connector=FakeConnector(world),
        store=RecordStore(home / "records", home / "locks"),
    ).run()


def new_world() -> World:
    return World({"db1": "primary", "db2": "standby"})


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Path, dict[str, Record]]]:
    home = make_home()
    with home_env(home):
        records = outcome_records(home)
        records["switchover"] = run_lab(home, switchover(), new_world())
        broken = new_world()
        broken.read_only_writes = True
        records["switchover_rolled_back"] = run_lab(home, switchover(), broken)
        no_stream = new_world()
        no_stream.streaming = False
        records["precondition"] = run_lab(home, switchover(), no_stream)
        records["missed"] = run_lab(
            home, switchover(declare=True), new_world(), {"objectives": {"rto": "1ms"}}
        )
        records["inspection"] = run_lab(home, inspection_playbook(), new_world())
    yield home, records
    shutil.rmtree(home, ignore_errors=True)


def sealed(home: Path, record: Record) -> Any:
    with home_env(home):
        return RecordStore(home / "records", home / "locks").sealed(record.id)


def test_the_lab_records_are_the_outcomes_the_tests_need(
    lab: tuple[Path, dict[str, Record]],
) -> None:
    _, r = lab
    assert r["switchover"].status == "passed"
    assert r["switchover_rolled_back"].rolled_back
    assert "expected a committed write" in r["switchover_rolled_back"].steps[1].reason
    assert r["precondition"].status == "aborted"
    assert r["precondition"].reason.startswith("precondition pg.streaming on db2 did not hold")
    assert r["missed"].reason.startswith("objectives missed: rto")
    assert r["missed"].objectives[0].source.startswith("run request (the playbook's target: 60s")
    assert r["inspection"].status == "failed"  # data_checksums off, no backup: two findings
    assert r["passed"].reason == "every step passed its checks"


# -- all-Chinese records ------------------------------------------------------------------------

OUTCOMES = [
    "passed",
    "failed",
    "rolled_back",
    "interrupted",
    "switchover",
    "switchover_rolled_back",
    "precondition",
    "missed",
    "inspection",
]


@pytest.mark.parametrize("name", OUTCOMES)
def test_a_chinese_report_holds_no_english_sentence(
    lab: tuple[Path, dict[str, Record]], name: str
) -> None:
    home, records = lab
    record = records[name]
    with home_env(home):
        page = render_report(sealed(home, record), fmt="html", lang="zh").decode()
        md = render_report(sealed(home, record), fmt="md", lang="zh").decode()
    for what, text in (("html", visible_html(page)), ("md", visible_md(md))):
        assert english_sentences(text) == [], (what, english_sentences(text))
        # every sentence these records hold is known: none had to be quoted as 原文
        assert "原文" not in text, what
    # The record is evidence: rendering it changed nothing in it.
    with home_env(home):
        assert RecordStore(home / "records", home / "locks").load(record.id) == record


def test_the_chinese_report_translates_what_the_record_says_in_english(
    lab: tuple[Path, dict[str, Record]],
) -> None:
    home, r = lab
    with home_env(home):
        ok = render_report(sealed(home, r["switchover"]), lang="zh").decode()
        back = render_report(sealed(home, r["switchover_rolled_back"]), lang="zh").decode()
        pre = render_report(sealed(home, r["precondition"]), lang="zh").decode()
        missed = render_report(sealed(home, r["missed"]), lang="zh").decode()
        passed = render_report(sealed(home, r["passed"]), lang="zh").decode()
    assert "全部步骤均通过校验" in passed and "every step passed its checks" not in passed
    # check expectations
    assert "主库（接受读写）" in ok and "一次写入成功提交" in ok
    assert "落后主库不超过 1048576 字节（1.0 MiB），且不超过 1s" in ok
    assert "自 127.0.0.2:5432 流复制" in ok
    # milestones and the objective's source
    for label in ("中断开始", "写入恢复", "业务恢复"):
        assert label in ok, label
    assert "实验室演练目标值；请按本院 GB/T 20988 灾难恢复能力等级设定" in ok
    # a check that did not hold, and the database's own message kept as code (evidence)
    assert "校验 pg.takes_writes（节点 db2）在 0.3s 内未满足" in back
    assert '<code class="said">cannot execute INSERT in a read-only transaction</code>' in back
    assert "演练已回退" in back
    assert "前置条件 pg.streaming（节点 db2）不满足（实际：无 WAL 接收进程" in pre
    assert "未做任何改动" in pre
    assert "恢复目标未达标：RTO 恢复时间 实测" in missed
    assert "运行请求指定的目标（预案原目标：60s" in missed
    assert "运行请求未携带突发事件宣布时间" in missed  # the incident step's note
    # its time in the report's zone, as every other time: not the record's UTC
    assert re.search(r"取演练开始时刻（\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}）", missed)


def test_an_english_report_shows_the_record_as_written(
    lab: tuple[Path, dict[str, Record]],
) -> None:
    home, r = lab
    with home_env(home):
        en = render_report(sealed(home, r["switchover_rolled_back"]), lang="en").decode()
    assert "expected a committed write" in en and "the drill was rolled back" in en


def test_what_no_table_knows_is_quoted_as_the_original(
    lab: tuple[Path, dict[str, Record]],
) -> None:
    _, r = lab
    odd = r["passed"].model_copy(update={"reason": "the moon was in the wrong phase"})
    source = ReportInput(record=odd, entry=None, annotations=[])
    page = render_report(source, fmt="html", lang="zh").decode()
    md = render_report(source, fmt="md", lang="zh").decode()
    assert '「原文：<span lang="en">the moon was in the wrong phase</span>」' in page
    assert "「原文：the moon was in the wrong phase」" in md
    # outside the marked original, no English sentence; and the mark is explained
    unmarked = re.sub(r"「原文：.*?」", " ", visible_html(page))
    assert english_sentences(unmarked) == []
    assert "本报告未能翻译" in page


def test_a_report_is_a_function_of_the_record_and_the_site(
    lab: tuple[Path, dict[str, Record]],
) -> None:
    home, r = lab
    with home_env(home):
        first = [render_report(sealed(home, r["switchover"]), fmt=f) for f in ("html", "md")]
        again = [render_report(sealed(home, r["switchover"]), fmt=f) for f in ("html", "md")]
    assert first == again


# -- site details, clause numbers ---------------------------------------------------------------


def test_a_report_with_the_default_site_says_so_in_a_banner(
    lab: tuple[Path, dict[str, Record]], tmp_path: Path
) -> None:
    home, r = lab
    with home_env(home, DRCTL_SITE_CONFIG=str(tmp_path / "none.yaml")):
        page = render_report(sealed(home, r["switchover"]), lang="zh").decode()
    banner = re.search(r'<div class="banner">(.*?)</div>', page, re.S)
    assert banner is not None
    for name in (
        "医院名称",
        "系统名称",
        "演练地点",
        "组织部门",
        "GB/T 20988 灾难恢复能力等级",
        "签字人",
        "标准条款编号",
    ):
        assert name in banner.group(1), name

    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "organisation": {"zh": "某市妇幼保健院", "en": "City MCH Hospital"},
                "location": {"zh": "信息科机房", "en": "IT machine room"},
                "department": {"zh": "信息科", "en": "IT department"},
                "systems": {"his-lab": {"zh": "HIS 医院信息系统", "en": "HIS"}},
                "dr_level": {"level": 5},
                "signatures": [
                    {"zh": "信息科", "en": "IT", "name": "张三"},
                    {"zh": "厂商工程师", "en": "Vendor engineer", "name": "李四"},
                ],
                "standards": [
                    {
                        "id": "gbt22239-emergency-plan",
                        "standard": "GB/T 22239-2019",
                        "level": {"zh": "第三级"},
                        "clause": "9.9.9",
                        "title": {"zh": "应急预案管理"},
                        "text": {"zh": "应定期进行应急预案的演练。"},
                    }
                ],
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    with home_env(home, DRCTL_SITE_CONFIG=str(site)):
        page = render_report(sealed(home, r["switchover"]), lang="zh").decode()
        md = render_report(sealed(home, r["switchover"]), fmt="md", lang="zh").decode()
    assert '<div class="banner">' not in page and "站点信息尚未配置" not in md
    for value in ("某市妇幼保健院", "信息科机房", "HIS 医院信息系统", "第 5 级", "张三", "李四"):
        assert value in page and value in md, value
    assert "GB/T 22239-2019 第三级 9.9.9 应急预案管理" in page


def test_standard_clauses_carry_their_numbers(lab: tuple[Path, dict[str, Record]]) -> None:
    home, r = lab
    with home_env(home):
        page = render_report(sealed(home, r["switchover"]), lang="zh").decode()
        md = render_report(sealed(home, r["switchover"]), fmt="md", lang="zh").decode()
    assert "GB/T 22239-2019 第三级 8.1.4.9 数据备份恢复" in page
    assert "GB/T 22239-2019 第三级 8.1.4.9 数据备份恢复" in md
    # The emergency-plan clause's number is not shipped (not confirmed): the report says it is
    # not configured, and where to set it, rather than print a guessed number.
    item = re.search(r"<li><b>GB/T 22239-2019 第三级 应急预案管理</b>(.*?)</li>", page, re.S)
    assert item is not None and "条款编号未配置" in item.group(1)
    assert "GB/T 20988-2025 灾难恢复能力等级" in page


# -- the timeline ----------------------------------------------------------------------------


def stamp(offset: float) -> str:
    at = datetime(2026, 11, 27, 1, 0, tzinfo=UTC) + timedelta(seconds=offset)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def journal_record(
    *,
    steps: list[tuple[str, float, float, str]],
    milestones: list[tuple[str, float]],
    objectives: dict[str, Any],
    started: datetime | None = None,
    status: str = "passed",
    measurements: dict[str, Any] | None = None,
    run_id: str = "20261127T010000Z-tl-lab-0000",
) -> Record:
    """A record built from a journal the way the runner writes one."""
    base = started or datetime(2026, 11, 27, 1, 0, tzinfo=UTC)

    def at(offset: float) -> str:
        moment = base + timedelta(seconds=offset)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    end = max([e for _, _, e, _ in steps] + [o for _, o in milestones] + [0.1])
    events: list[dict[str, Any]] = [
        {
            "event": "run_started",
            "at": at(0),
            "offset": 0.0,
            "run_id": run_id,
            "mode": "drill",
            "playbook": {
                "name": "tl",
                "version": 1,
                "kind": "switchover",
                "title": {"en": "Timeline", "zh": "时间线"},
            },
            "environment": {"name": "lab"},
            "objectives": objectives,
        }
    ]
    for step_id, start, stop, step_status in steps:
        events.append(
            {
                "event": "step",
                "at": at(stop),
                "offset": stop,
                "step": {
                    "id": step_id,
                    "title": {"en": step_id, "zh": f"步骤 {step_id}"},
                    "action": "observe",
                    "target": "primary",
                    "node": "db1",
                    "status": step_status,
                    "attempts": 1,
                    "started_at": at(start),
                    "ended_at": at(stop),
                    "offsets": {"started": start, "ended": stop},
                    "duration_seconds": round(stop - start, 6),
                },
            }
        )
    for name, offset in milestones:
        events.append(
            {
                "event": "milestone",
                "at": at(offset),
                "offset": offset,
                "milestone": {"name": name, "at": at(offset), "offset": offset},
            }
        )
    if measurements:
        events.append(
            {"event": "measurements", "at": at(end), "offset": end, "measurements": measurements}
        )
    reason = (
        "every step passed its checks" if status == "passed" else "steps s1 failed; the others ran"
    )
    events.append(
        {"event": "run_ended", "at": at(end), "offset": end, "status": status, "reason": reason}
    )
    return build_record(events)


SWITCH: dict[str, Any] = {
    "steps": [
        ("stop_primary", 0.0, 0.12, "passed"),
        ("confirm", 0.12, 0.2, "passed"),
        ("promote", 0.2, 0.55, "passed"),
        ("verify", 0.55, 0.66, "passed"),
    ],
    "milestones": [
        ("run_started", 0.0),
        ("outage_started", 0.01),
        ("writes_stopped", 0.02),
        ("writes_restored", 0.5),
        ("service_verified", 0.52),
        ("service_restored", 0.6),
        ("restore_verified", 0.61),
    ],
    "objectives": {
        "rto": {"target": 60, "from": "outage_started", "to": "service_restored"},
        "response": {"target": 0.5, "from": "outage_started", "to": "writes_restored"},
    },
}


def svg_labels(svg: str) -> list[tuple[float, float, float, float, str]]:
    """The boxes of the labels under the axis, from the SVG as drawn: a CJK character (or a
    wide symbol) is one em wide, anything else 0.62 em (wider than the fonts draw them)."""
    boxes = []
    for match in re.finditer(
        r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="(\w+)" fill="[^"]*" font-size="([\d.]+)"'
        r' class="label[^"]*">([^<]*)</text>',
        svg,
    ):
        x, y, anchor, size, label = match.groups()
        text = html_lib.unescape(label)
        em = float(size)
        width = sum(em if (ord(c) >= 0x2E80 or c in "◆≤→↩") else 0.62 * em for c in text)
        left = float(x) if anchor == "start" else float(x) - width
        boxes.append((left, float(y) - em, left + width, float(y) + 0.25 * em, text))
    return boxes


def test_a_far_deadline_is_drawn_past_an_axis_break_not_at_the_edge() -> None:
    from drills.reports.charts import RIGHT, WIDTH, timeline

    record = journal_record(**SWITCH)
    chart = timeline(record, {})
    rto = next(line for line in chart.deadlines if line.label.startswith("rto"))
    response = next(line for line in chart.deadlines if line.label.startswith("response"))
    assert chart.axis_break is not None
    # 60 s against a 0.66 s run: beyond the break, inside the plot, its time on the axis
    assert rto.clipped and chart.axis_break.x1 < rto.x < WIDTH - RIGHT - 10
    assert any(tick.label == "1m00.0s" and tick.x == rto.x for tick in chart.axis)
    # the steps and the near deadline keep the run's own scale, left of the break
    assert not response.clipped and response.x < chart.axis_break.x0
    assert all(bar.x + bar.w <= chart.axis_break.x0 for bar in chart.bars)
    assert max(bar.x + bar.w for bar in chart.bars) > chart.left + 0.8 * (
        chart.axis_break.x0 - chart.left
    )


def test_milestone_and_deadline_labels_never_overlap() -> None:
    from drills.reports import render_report

    record = journal_record(**SWITCH)
    page = render_report(ReportInput(record, None, []), fmt="html", lang="zh").decode()
    svg = page[page.index("<svg") : page.index("</svg>")]
    width = float(re.search(r'viewBox="0 0 (\d+) (\d+)"', svg).group(1))  # type: ignore[union-attr]
    height = float(re.search(r'viewBox="0 0 (\d+) (\d+)"', svg).group(2))  # type: ignore[union-attr]
    boxes = svg_labels(svg)
    texts = [b[4] for b in boxes]
    # every milestone but the start, in Chinese, and both deadlines
    for label in ("中断开始", "停止写入", "写入恢复", "业务验证通过", "业务恢复", "恢复验证通过"):
        assert any(label in t for t in texts), label
    assert sum("≤" in t for t in texts) == 2
    for n, a in enumerate(boxes):
        assert a[0] >= 0 and a[2] <= width and a[3] <= height, a
        for b in boxes[n + 1 :]:
            apart = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
            assert apart, (a, b)


# -- the trend -----------------------------------------------------------------------------------


def trend_records() -> list[Record]:
    """Five drills on one day (Shanghai), one of them failed, and one a week later."""
    records = []
    day = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
    for n, (hours, status, took) in enumerate(
        [
            (0, "passed", 0.3),
            (1, "passed", 0.35),
            (2, "failed", 0.9),
            (3, "passed", 0.32),
            (4, "passed", 0.31),
            (24 * 7, "passed", 0.33),
        ]
    ):
        started = day + timedelta(hours=hours)
        records.append(
            journal_record(
                steps=[("s1", 0.0, took / 2, status), ("s2", took / 2, took, "passed")],
                milestones=[
                    ("run_started", 0.0),
                    ("outage_started", 0.0),
                    ("service_restored", took),
                ],
                objectives={
                    "rto": {"target": 30, "from": "outage_started", "to": "service_restored"}
                },
                started=started,
                status=status,
                run_id=f"{started.strftime('%Y%m%dT%H%M%SZ')}-tl-lab-{n:04d}",
            )
        )
    return records


def test_the_trend_has_dates_and_times_a_covering_axis_the_target_and_failures() -> None:
    from drills.reports.site import load_site_config
    from drills.reports.trend import trend_view

    records = trend_records()
    site = load_site_config(Path("/nonexistent/site.yaml"))
    doc = trend_view("tl", records, site, "zh")
    chart = doc["chart"]
    times = [label.time for label in chart.x_labels]
    dates = [label.date for label in chart.x_labels if label.date]
    # Asia/Shanghai (UTC+8): 01:00Z is 09:00; the day's date once, then the next week's
    assert times[:5] == ["09:00", "10:00", "11:00", "12:00", "13:00"]
    assert dates == ["2026-11-27", "2026-12-04"]
    assert doc["rows"][0]["started"] == "2026-11-27 09:00:00" and "Asia/Shanghai" in doc["timezone"]
    # the y-axis reaches above every value
    highest = max(r.steps[-1].offsets.ended for r in records)
    assert chart.y_max >= highest and chart.y_axis[-1][1] != "0s"
    # the 30 s target is far above 0.9 s: drawn past a break at the top, not off the chart
    assert (
        chart.target and chart.target_off_scale and all(y < chart.plot_top for _, y in chart.target)
    )
    assert len(chart.failed) == 1
    page = render_trend("tl", records, lang="zh", site=site).decode()
    assert page.count('class="failed">✕</text>') == 1 and 'class="target"' in page
    assert "未通过" in page and "09:00" in page
    # another zone, if the site says so: every time moves with it
    utc = trend_view("tl", records, {**site, "timezone": "UTC"}, "zh")
    assert utc["chart"].x_labels[0].time == "01:00" and utc["rows"][0]["started"].endswith(
        "01:00:00"
    )


def test_a_target_near_the_values_is_on_the_axis() -> None:
    from drills.reports.charts import trend_chart

    moments = [datetime(2026, 11, 27, h, tzinfo=UTC) for h in (1, 2, 3)]
    chart = trend_chart(moments, {"s": [0.4, 0.5, 0.6]}, [0.8, 0.9, 1.3], targets=[1.0, 1.0, 1.0])
    assert not chart.target_off_scale and chart.y_max >= 1.3
    assert all(chart.plot_top < y < chart.bottom for _, y in chart.target)


# -- layout ----------------------------------------------------------------------------------------


def test_the_markdown_report_shows_the_service_outage() -> None:
    record = journal_record(
        **SWITCH,
        measurements={
            "service_outage_seconds": 1.25,
            "service_probe": {"seconds": 1.25, "attempts": 40, "failures": 6},
        },
    )
    md = render_report(ReportInput(record, None, []), fmt="md", lang="zh").decode()
    assert "业务中断: 1.250s" in md
    en = render_report(ReportInput(record, None, []), fmt="md", lang="en").decode()
    assert "Service outage: 1.250s" in en


FOOTER = re.compile(r"^\s*\d+\s*/\s*\d+\s*$", re.M)


@pytest.mark.parametrize("name", ["passed", "rolled_back", "switchover_rolled_back", "inspection"])
def test_no_pdf_page_holds_only_its_footer(lab: tuple[Path, dict[str, Record]], name: str) -> None:
    home, records = lab
    with home_env(home):
        pdf = render_report(sealed(home, records[name]), fmt="pdf", lang="zh")
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 2
    for number, page in enumerate(reader.pages, 1):
        body = FOOTER.sub("", page.extract_text() or "")
        assert len(re.sub(r"\s+", "", body)) >= 80, (number, body)


# -- the CLI at 80 columns -------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 50])
def test_records_list_and_status_keep_whole_ids_at_80_columns(
    lab: tuple[Path, dict[str, Record]], columns: int
) -> None:
    """At 80 columns both are tables; at 50 (narrower than a table with a whole id) each id
    gets a line of its own. Either way no line is wider than the terminal and no id is cut."""
    home, records = lab
    for args in (["records", "list"], ["records", "status"]):
        shown = drctl(*args, home=home, env={"COLUMNS": str(columns)})
        assert shown.returncode in (0, 1), shown.stderr
        lines = shown.stdout.splitlines()
        assert all(len(line.rstrip()) <= columns for line in lines), shown.stdout
        assert ("─" * 20 in shown.stdout) == (columns == 80)  # a table, or lines
        ids = {line.strip() for line in lines} | set(" ".join(lines).split())
        if args[1] == "list":
            for record in records.values():
                assert record.id in ids, record.id
        else:
            listed = json.loads(drctl("records", "status", "--json", home=home).stdout)
            passes = [e["last_pass_id"] for e in listed if e["last_pass_id"]]
            assert records["passed"].id in passes and len(passes) >= 2
            for last_pass in passes:
                assert last_pass in ids, last_pass
            assert "STALE" in shown.stdout and "lab-inspection @ his-lab" in shown.stdout


def test_a_site_adds_its_own_phrases(lab: tuple[Path, dict[str, Record]], tmp_path: Path) -> None:
    _, r = lab
    phrases = tmp_path / "phrases.yaml"
    phrases.write_text(
        "sentences:\n"
        "  - en: 'the moon was in the (?P<which>\\w+) phase'\n"
        "    zh: '月相不对（{which}）'\n"
        "milestones: {outage_started: 停机开始}\n",
        encoding="utf-8",
    )
    odd = r["switchover"].model_copy(update={"reason": "the moon was in the wrong phase"})
    with home_env(tmp_path, DRCTL_PHRASES=str(phrases)):
        page = render_report(ReportInput(odd, None, []), fmt="html", lang="zh").decode()
    assert "月相不对（wrong）" in page and "原文" not in page
    assert "停机开始" in page and "业务恢复" in page  # the site's name, and the shipped ones
