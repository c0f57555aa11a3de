"""The inspection of the whole stack (巡检: clients, application servers, database servers).

`his-stack-inspection` runs unchanged on both session labs (`any_lab`): every host item through
the node's own executor (at the two-site lab the database hosts over SSH as their site users),
the application as its clients see it, and the database pair; the quarterly inspection report
groups the items by 客户端 / 应用服务器 / 数据库服务器 and lists every abnormal item with its
suggested handling. Each test provokes what it asserts: a threshold of 0, an error in the server
log after the previous inspection, a forgotten replication slot, a log file with new errors, an
HTTPS service whose self-signed certificate expires within the threshold. The parsers and the
clock's skew are also tested against a fake host whose answers are canned.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.engine.targets import Targets
from drills.executors.host import CommandResult, PosixHost
from drills.model.environment import Environment, Node
from drills.model.record import Record
from tests.helpers import REPO
from tests.labs import AnyLab
from tests.pg_fixtures import private_home, run, sql, steps_of
from verify import host as hostcheck

needs_lab = pytest.mark.lab
PLAYBOOK = "his-stack-inspection"


def playbook_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "playbooks" / f"{PLAYBOOK}.yaml").read_text())
    return data


def only(tmp_path: Path, name: str, steps: dict[str, dict[str, Any]]) -> Path:
    """The stack inspection with only ``steps``, their first check's parameters updated."""
    data = playbook_data()
    kept = []
    for step in data["steps"]:
        if step["id"] in steps:
            check = step["verify"][0]
            check["with"] = {**(check.get("with") or {}), **steps[step["id"]]}
            kept.append(step)
    data["steps"], data["name"] = kept, name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def observed(record: Record, step: str, index: int = 0) -> Any:
    return steps_of(record)[f"main:{step}"].checks[index].observed


def report(lab_home: Path, record: Record, fmt: str = "html", lang: str = "zh") -> str:
    from drills.records.store import RecordStore
    from drills.reports import render_report

    store = RecordStore(lab_home / "records", lab_home / "locks")
    return render_report(store.sealed(record.id), fmt=fmt, lang=lang).decode()


def visible(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def advice(check: str, lang: str = "zh") -> str:
    from drills.reports.inspection import words

    text: str = words(lang)["advice"][check]
    return text.split("`")[0][:24]


# -- the whole stack, on both labs ---------------------------------------------------------------


def local_meminfo() -> int:
    line = next(li for li in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in li)
    return int(line.split()[1]) * 1024


def mount_of(path: str) -> str:
    current = Path(path).resolve()
    while not os.path.ismount(current):
        current = current.parent
    return str(current)


@needs_lab
def test_every_server_is_inspected_and_reported_by_its_role(any_lab: AnyLab) -> None:
    with any_lab.active():
        any_lab.wait_streaming()
        record = run(PLAYBOOK, any_lab.env)
    assert record.status in ("passed", "failed"), record.reason
    items = sum(len(s.checks) for s in record.steps)
    assert items == 39
    errors = [(s.id, c.detail) for s in record.steps for c in s.checks if c.verdict == "error"]
    assert errors == []  # every item could be asked, on every host
    primary, standby = record.roles["primary"], record.roles["standby"]

    # The hosts' answers are this machine's (the labs' hosts are this machine).
    cpus = len(os.sched_getaffinity(0))
    for prefix in ("app", "primary", "standby"):
        assert observed(record, f"{prefix}_cpu")["cpus"] == cpus
        assert observed(record, f"{prefix}_memory")["total_bytes"] == local_meminfo()
        assert observed(record, f"{prefix}_units")["systemd"] == os.path.isdir(
            "/run/systemd/system"
        )
        clock = observed(record, f"{prefix}_clock")
        assert clock["source"] == ("nodes" if not shutil.which("chronyc") else clock["source"])
        assert abs(clock["skew_seconds"]) < 1.0 and clock["skew_bound_seconds"] >= 0
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        booted = datetime.fromisoformat(observed(record, f"{prefix}_reboot")["booted_at"])
        assert abs(booted.timestamp() - (time.time() - uptime)) < 5
    pg = any_lab.node(primary).postgres
    assert pg is not None
    mounts = {f["mount"] for f in observed(record, "primary_filesystems")["filesystems"]}
    assert mount_of(pg.data_dir) in mounts
    assert observed(record, "primary_log_errors")["files"][0]["path"] == f"{pg.data_dir}.log"
    response = observed(record, "app_response_time")
    assert response["requests"] == response["ok"] == 20 and response["p95_ms"] > 0
    assert observed(record, "app_tls") == {
        "https": False,
        "url": any_lab.node("app").http.base_url,  # type: ignore[union-attr]
    }
    xid = observed(record, "xid_age")
    assert xid["age"] > 0 and xid["margin"] == 2**31 - xid["age"]
    if any_lab.over_ssh:
        nodes = record.environment["nodes"]
        assert nodes[primary]["executor"] == nodes[standby]["executor"] == "ssh"

    # The report: grouped by server, every finding with its handling.
    html = report(any_lab.home, record)
    text = visible(html)
    assert "季度巡检报告" in text and "原文" not in text
    groups = re.findall(r'<tr class="group"><th colspan="6">([^<]+)</th></tr>', html)
    assert groups == ["应用服务器", "数据库服务器"]
    assert f"本次巡检共 {items} 项" in text
    failed = [s for s in record.steps if s.status == "failed"]
    findings = html.split("二、异常项与处理建议")[1].split("三、结论")[0]
    for step in failed:
        assert advice(step.checks[0].check) in findings, step.id
    english = report(any_lab.home, record, "md", "en")
    assert "Application servers" in english and "Database servers" in english


@needs_lab
def test_a_threshold_of_zero_is_abnormal_and_listed_with_its_handling(
    any_lab: AnyLab, tmp_path: Path
) -> None:
    playbook = only(
        tmp_path,
        "stack-zero",
        {
            "app_memory": {"max_used_percent": 0},
            "primary_filesystems": {"max_used_percent": 0},
            "xid_age": {"max_age_percent": 0},
            "app_response_time": {"requests": 3, "max_p95": 0},
            "primary_role": {},  # as shipped: normal
        },
    )
    with any_lab.active():
        record = run(playbook, any_lab.env)
    assert record.status == "failed"
    status = {s.id: s.status for s in record.steps}
    assert status == {
        "app_memory": "failed",
        "app_response_time": "failed",
        "primary_role": "passed",
        "primary_filesystems": "failed",
        "xid_age": "failed",
    }
    assert observed(record, "app_memory")["used_percent"] > 0
    assert observed(record, "primary_filesystems")["over"]
    html = report(any_lab.home, record)
    findings = visible(html.split("二、异常项与处理建议")[1].split("三、结论")[0])
    for item, check in (
        ("内存与交换分区", "host.memory"),
        ("文件系统空间与 inode", "host.filesystems"),
        ("事务号年龄（回卷余量）", "pg.xid_age"),
        ("应用响应时间（20 次请求）", "app.response_time"),
    ):
        assert item in findings and advice(check) in findings, item
    assert "应用服务器" in findings and "数据库服务器" in findings
    assert "主库角色" not in findings
    assert "内存使用率 ≤ 0%" in visible(html)  # the standard, from the threshold recorded
    assert "原文" not in visible(html)


@needs_lab
def test_server_log_errors_count_from_the_previous_inspection(
    any_lab: AnyLab, tmp_path: Path
) -> None:
    playbook = only(tmp_path, "stack-log", {"primary_log_errors": {}, "primary_reboot": {}})
    with any_lab.active():
        any_lab.wait_streaming()
        first = run(playbook, any_lab.env)
        dsn = any_lab.dsn(any_lab.role_of("primary"))
        with pytest.raises(Exception, match="invalid input syntax"):
            sql(dsn, "select 'Zhang San'::int")
        second = run(playbook, any_lab.env)
        third = run(playbook, any_lab.env)
    log = observed(second, "primary_log_errors")
    assert log["previous_record"] == first.id and first.id in log["since_source"]
    assert log["matches"] >= 1 and steps_of(second)["main:primary_log_errors"].status == "failed"
    samples = [s for f in log["files"] for s in f["samples"]]
    assert any("invalid input syntax for type integer: ?" in s for s in samples), samples
    assert "Zhang San" not in second.to_json()  # the quoted value is scrubbed
    reboot = observed(second, "primary_reboot")
    assert reboot["since_source"].startswith(f"previous inspection {first.id}")
    assert reboot["rebooted_since"] is False
    # The next inspection counts from the second one: nothing new since.
    again = observed(third, "primary_log_errors")
    assert again["previous_record"] == second.id and again["matches"] == 0
    assert steps_of(third)["main:primary_log_errors"].status == "passed"
    text = visible(report(any_lab.home, second))
    assert advice("pg.log_errors") in text and "Zhang San" not in text and "原文" not in text


@needs_lab
def test_named_log_files_are_scanned_on_the_nodes_host(any_lab: AnyLab, tmp_path: Path) -> None:
    folder = Path(f"/tmp/drctl-logs-{any_lab.env}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o755)
    now = datetime.now()
    old = (now - dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")
    new = now.strftime("%Y-%m-%d %H:%M:%S")
    log = folder / "his-app.log"
    log.write_text(
        f"{old} ERROR disk full (before the inspection window)\n"
        f"{new} INFO started\n"
        f"{new} ERROR payment for 'Zhang San' failed\n"
        "    at his.billing.Payment ERROR trace\n"
        f"{new} WARN slow\n"
    )
    log.chmod(0o644)
    data = playbook_data()
    data["name"] = "stack-named-logs"
    data["steps"] = [
        {
            "id": "app_logs",
            "title": {"en": "Application log", "zh": "应用日志错误"},
            "action": "observe",
            "target": "primary",
            "verify": [
                {
                    "check": "host.log_errors",
                    "with": {"files": [str(log)], "patterns": ["ERROR"], "since": "1h"},
                }
            ],
            "within": "1s",
            "on_failure": "continue",
        },
        {
            "id": "missing_log",
            "title": {"en": "A log that is not there", "zh": "不存在的日志"},
            "action": "observe",
            "target": "standby",
            "verify": [
                {
                    "check": "host.log_errors",
                    "with": {"files": [str(folder / "nope.log")], "max_lines": 10},
                }
            ],
            "within": "1s",
            "on_failure": "continue",
        },
    ]
    path = tmp_path / "stack-named-logs.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    try:
        with any_lab.active():
            record = run(path, any_lab.env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    scanned = observed(record, "app_logs")
    assert scanned["since_source"] == "since parameter"
    [entry] = scanned["files"]
    # The new ERROR line and the trace line under it; not the one before the window.
    assert entry["matches"] == 2 and entry["timestamps"] is True
    assert entry["samples"] == [
        f"{new} ERROR payment for ? failed",
        "at his.billing.Payment ERROR trace",
    ]
    assert "Zhang San" not in record.to_json()
    missing = observed(record, "missing_log")
    assert missing["missing"] == [str(folder / "nope.log")]
    assert {s.id: s.status for s in record.steps} == {"app_logs": "failed", "missing_log": "failed"}
    text = visible(report(any_lab.home, record))
    assert "日志文件不存在或不可读" in text and advice("host.log_errors") in text
    assert "原文" not in text


@needs_lab
def test_a_forgotten_replication_slot_is_a_finding(any_lab: AnyLab, tmp_path: Path) -> None:
    playbook = only(tmp_path, "stack-slots", {"primary_slots": {}})
    with any_lab.active():
        dsn = any_lab.dsn(any_lab.role_of("primary"))
        sql(dsn, "select pg_create_physical_replication_slot('drctl_test_forgotten', true)")
        try:
            sql(dsn, "select pg_switch_wal()")
            record = run(playbook, any_lab.env)
        finally:
            sql(dsn, "select pg_drop_replication_slot('drctl_test_forgotten')")
        again = run(playbook, any_lab.env)
    found = observed(record, "primary_slots")
    assert found["findings"] == ["drctl_test_forgotten"]
    [slot] = found["slots"]
    assert slot["active"] is False and slot["type"] == "physical"
    assert slot["retained_bytes"] is not None and slot["retained_bytes"] > 0
    assert record.status == "failed" and again.status == "passed"
    text = visible(report(any_lab.home, record))
    assert "drctl_test_forgotten" in text and "pg_drop_replication_slot" in text
    assert "原文" not in text


# -- an HTTPS application and a client, without a database ---------------------------------------


def self_signed(folder: Path, days: int) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "his.example.org")])
    now = datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def https_service(tmp_path: Path) -> Iterator[int]:
    """A tiny HTTPS server on loopback with a self-signed certificate valid for 10 days."""
    cert, key = self_signed(tmp_path, 10)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_an_expiring_certificate_is_a_finding_and_a_client_is_grouped_first(
    https_service: int, tmp_path: Path
) -> None:
    port = https_service
    env = {
        "name": "https-lab",
        "nodes": {
            "web": {"role": "app", "host": "127.0.0.1", "port": port,
                    "http": {"base_url": f"https://127.0.0.1:{port}"}},
            "ws1": {"role": "client", "host": "127.0.0.1"},
        },
    }  # fmt: skip
    env_file = tmp_path / "https-lab.yaml"
    env_file.write_text(yaml.safe_dump(env))
    tls_step = next(s for s in playbook_data()["steps"] if s["id"] == "app_tls")
    memory_step = next(s for s in playbook_data()["steps"] if s["id"] == "app_memory")
    data = playbook_data() | {"name": "stack-https", "roles": ["client", "app"], "engines": []}
    data["steps"] = [
        tls_step,
        tls_step | {"id": "app_tls_short", "verify": [
            {"check": "app.tls_certificate", "with": {"min_days_left": 5}}]},
        memory_step | {"id": "client_memory", "target": "client"},
    ]  # fmt: skip
    path = tmp_path / "stack-https.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    with private_home("drctl-https-") as home:
        record = run(path, str(env_file))
        html = report(home, record)
    cert = observed(record, "app_tls")
    assert cert["https"] is True and cert["endpoint"] == f"127.0.0.1:{port}"
    assert 9.9 < cert["days_left"] <= 10.0
    assert cert["self_signed"] is True and cert["trusted"] is False
    assert "CN=his.example.org" in cert["subject"]
    status = {s.id: s.status for s in record.steps}
    assert status == {"app_tls": "failed", "app_tls_short": "passed", "client_memory": "passed"}
    groups = re.findall(r'<tr class="group"><th colspan="6">([^<]+)</th></tr>', html)
    assert groups == ["客户端", "应用服务器"]
    text = visible(html)
    assert advice("app.tls_certificate") in text and "证书剩余有效期 ≥ 30 天" in text
    assert "原文" not in text


# -- the parsers and the clock, against a host whose answers are canned --------------------------


class CannedHost(PosixHost):
    def __init__(self, answers: dict[str, Any]) -> None:
        self.host = "db9"
        self.answers = answers

    @property
    def address(self) -> str:
        return "fake@db9"

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
        for needle, out in self.answers.items():
            if needle in text:
                value = out() if callable(out) else out
                return CommandResult(tuple(argv), 0, value, "", 0.01)
        raise AssertionError(f"unexpected command: {text}")


class CannedConnector:
    def __init__(self, host: CannedHost) -> None:
        self.fake = host

    def host(self, name: str, node: Node) -> CannedHost:
        return self.fake

    def sql(self, name: str, node: Node) -> Any:
        raise AssertionError("no SQL here")

    def http(self, name: str, node: Node) -> Any:
        raise AssertionError("no HTTP here")


def canned(answers: dict[str, Any]) -> Targets:
    env = Environment.model_validate(
        {"name": "far", "nodes": {"db9": {"role": "primary", "host": "10.9.9.9"}}}
    )
    return Targets(env, {"primary": "db9"}, CannedConnector(CannedHost(answers)))


CHRONY = """@chrony
Reference ID    : C0A80001 (ntp.hospital.local)
Stratum         : 3
System time     : 0.000421337 seconds slow of NTP time
Leap status     : {leap}
"""


def test_a_clock_five_seconds_ahead_is_a_finding_and_chrony_is_believed() -> None:
    ahead = canned({"@chrony": "@none\n", "date +%s.%N": lambda: f"{time.time() + 5:.9f}\n"})
    skewed = hostcheck.clock_offset(ahead, "primary", hostcheck.ClockParams(max_offset=1.0))
    assert not skewed.held and skewed.observed["source"] == "nodes"
    assert 4.9 < skewed.observed["skew_seconds"] < 5.1
    synced = canned(
        {"@chrony": CHRONY.format(leap="Normal"), "date +%s.%N": lambda: f"{time.time():.9f}"}
    )
    good = hostcheck.clock_offset(synced, "primary", hostcheck.ClockParams())
    assert good.held and good.observed["source"] == "chrony"
    assert good.observed["offset_seconds"] == pytest.approx(-0.000421337)
    assert good.observed["reference"] == "C0A80001 (ntp.hospital.local)"
    lost = canned(
        {"@chrony": CHRONY.format(leap="Not synchronised"), "date": lambda: f"{time.time():.9f}"}
    )
    assert not hostcheck.clock_offset(lost, "primary", hostcheck.ClockParams()).held
    # chronyc without chronyd: not believed; the skew decides.
    absent = canned(
        {"@chrony": "@chrony\n506 Cannot talk to daemon\n", "date": lambda: f"{time.time():.9f}"}
    )
    assert (
        hostcheck.clock_offset(absent, "primary", hostcheck.ClockParams()).observed["source"]
        == "nodes"
    )


DF_BLOCKS = """Filesystem     Type       1-blocks        Used   Available Capacity Mounted on
udev           devtmpfs  4000000000           0  4000000000       0% /dev
/dev/sda1      ext4    100000000000 90000000000 10000000000      90% /
/dev/loop0     squashfs    60000000    60000000           0     100% /snap/core/1
tmpfs          tmpfs     1000000000     1000000   999000000       1% /run
/dev/sdb1      xfs     500000000000 50000000000 450000000000     10% /data/pg main
"""
DF_INODES = """Filesystem     Type     Inodes   IUsed   IFree IUse% Mounted on
/dev/sda1      ext4    1000000  100000  900000   10% /
/dev/sdb1      xfs     1000000  950000   50000   95% /data/pg main
"""


def test_real_file_systems_only_and_each_over_its_limit_named() -> None:
    targets = canned({"-B1": DF_BLOCKS, "-i": DF_INODES})
    found = hostcheck.filesystems(targets, "primary", hostcheck.FilesystemsParams())
    assert [f["mount"] for f in found.observed["filesystems"]] == ["/", "/data/pg main"]
    assert found.observed["over"] == ["/", "/data/pg main"]  # 90% used; 95% of inodes
    assert not found.held
    relaxed = hostcheck.FilesystemsParams(max_used_percent=95, max_inodes_used_percent=99)
    assert hostcheck.filesystems(targets, "primary", relaxed).held


def test_failed_units_and_no_systemd() -> None:
    listing = (
        "@systemd\nbackup.service loaded failed failed Nightly backup\n"
        "● his-agent.service loaded failed failed HIS agent\n"
    )
    units = canned({"@systemd": listing})
    found = hostcheck.failed_units(units, "primary", hostcheck.FailedUnitsParams())
    assert found.observed["failed"] == ["backup.service", "his-agent.service"] and not found.held
    known = hostcheck.FailedUnitsParams(ignore=["backup.service", "his-agent.service"])
    assert hostcheck.failed_units(units, "primary", known).held
    none = hostcheck.failed_units(canned({"@systemd": "@none\n"}), "primary", known)
    assert none.held and none.observed["note"] == "systemd not running"


def test_memory_and_swap() -> None:
    meminfo = (
        "MemTotal:       16000000 kB\nMemFree:  1000000 kB\nMemAvailable:    1600000 kB\n"
        "SwapTotal:       4000000 kB\nSwapFree:        1000000 kB\n"
    )
    found = hostcheck.memory(
        canned({"/proc/meminfo": meminfo}), "primary", hostcheck.MemoryParams()
    )
    assert found.observed["used_percent"] == 90.0 and found.observed["swap_used_percent"] == 75.0
    assert not found.held  # swap 75% > 50%


# -- the schedules ---------------------------------------------------------------------------------


def test_the_half_yearly_and_pre_holiday_inspections_are_scheduled() -> None:
    from zoneinfo import ZoneInfo

    from drills.ops.definitions import load_definitions, shipped_definitions
    from flows.deployments import plan_deployments

    shanghai = ZoneInfo("Asia/Shanghai")
    loaded, broken = load_definitions([shipped_definitions()])
    assert broken == [] and all(item.usable for item in loaded)
    plans = {p.name: p for p in plan_deployments(loaded, date(2026, 1, 5))}
    after = datetime(2026, 1, 5, tzinfo=shanghai)
    [onsite] = plans["half-yearly-onsite-inspection"].schedules
    assert onsite.next_runs(after, 2) == [
        datetime(2026, 3, 11, 9, tzinfo=shanghai),
        datetime(2026, 9, 9, 9, tzinfo=shanghai),
    ]
    [backup] = plans["pre-holiday-backup-verification"].schedules
    [inspection] = plans["pre-holiday-inspection"].schedules
    backups, inspections = backup.next_runs(after, 3), inspection.next_runs(after, 3)
    # Before each long break both run, the same day: the inspection after the backup's.
    assert [d.date() for d in inspections] == [d.date() for d in backups]
    assert all(i - b == dt.timedelta(hours=6) for i, b in zip(inspections, backups, strict=True))
    by_name = {item.definition.name: item.definition for item in loaded}
    assert by_name["pre-holiday-inspection"].playbook == PLAYBOOK
    assert by_name["half-yearly-onsite-inspection"].playbook == PLAYBOOK


def test_the_stack_inspection_is_json_schema_valid() -> None:
    import jsonschema

    from drills.model.playbook import playbook_json_schema

    jsonschema.validate(playbook_data(), playbook_json_schema())
