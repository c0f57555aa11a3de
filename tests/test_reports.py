"""Reports, freshness, trends, Prefect artifacts and secrets: read as an auditor would.

The HTML is read as text, the PDF is checked for pages (and its text extracted), and every output
is searched for a secret planted in the environment.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pypdf
import pytest

from drills.model.record import Record, build_record
from drills.records.store import RecordStore
from tests.helpers import drctl
from tests.test_records_support import (
    PASSED_STEPS,
    environment_file,
    home_env,
    make_home,
    outcome_records,
    playbook_file,
    run,
    shell,
)

ZH_FORM_FIELDS = [
    "演练名称",
    "演练编号",
    "系统",
    "演练场景",
    "演练类型",
    "计划起止时间",
    "实际起止时间",
    "参与人员与角色",
    "步骤与时间节点",
    "结果评估",
    "数据一致性",
    "回退",
    "存在问题",
    "整改措施",
    "预案是否修订",
    "附件",
    "签字",
]
STATUS_ZH = {"passed": "通过", "failed": "未通过", "interrupted": "中断"}


@pytest.fixture(scope="module")
def outcomes() -> Iterator[tuple[Path, dict[str, Record]]]:
    home = make_home()
    with home_env(home):
        records = outcome_records(home)
    yield home, records
    shutil.rmtree(home, ignore_errors=True)


def pdf_pages_and_text(data: bytes) -> tuple[int, str]:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return len(reader.pages), "".join(page.extract_text() or "" for page in reader.pages)


@pytest.mark.parametrize("outcome", ["passed", "failed", "rolled_back", "interrupted"])
def test_a_report_renders_for_every_outcome(
    outcomes: tuple[Path, dict[str, Record]], outcome: str, tmp_path: Path
) -> None:
    from drills.reports import render_report

    home, records = outcomes
    record = records[outcome]
    with home_env(home):
        sealed = RecordStore(home / "records", home / "locks").sealed(record.id)
        html, md, pdf = (render_report(sealed, fmt=fmt) for fmt in ("html", "md", "pdf"))
    html = html.decode("utf-8")
    for field in ZH_FORM_FIELDS:
        assert field in html, field
    assert record.id in html and f"演练 {record.playbook['name']}" in html
    status = "未通过" if outcome == "rolled_back" else STATUS_ZH[outcome]
    assert f'<span class="{record.status}">{status}</span>' in html
    for step in record.steps:
        assert f"步骤 {step.id}" in html
    # the timeline with the RTO deadline (named in Chinese in a zh report)
    assert "<svg" in html and "RTO 恢复时间 ≤ 30.0s" in html
    assert "GB/T 22239-2019 第三级 8.1.4.9" in html and "应急预案管理" in html
    assert "GB/T 20988-2025" in html
    journal = home / "records" / f"{record.id}.journal.jsonl"
    assert __import__("hashlib").sha256(journal.read_bytes()).hexdigest() in html
    if outcome == "passed":
        # Host output is text: the <script> a host printed is escaped, never markup.
        assert "&lt;script&gt;alert(&#34;host&#34;)&lt;/script&gt; switched" in html
        assert "<script>" not in html
    if outcome == "rolled_back":
        assert "已回退" in html and "步骤 promote 失败" in html and "↩ 回退" in html
    if outcome == "interrupted":
        # The step in progress never finished: it has no row; the reason says where it stopped
        # and what comes next, in Chinese, the commands as code.
        assert "演练中断" in html and "<td>步骤 second<br>" not in html
        assert "<td>步骤 first<br>" in html
        assert "被 SIGINT (Ctrl-C) 停止，正在执行步骤 second（已停止）：其结果未知" in html
        assert f'下一步：<code class="said">drctl resume {record.id}</code>' in html
    if outcome == "failed":
        assert "步骤 check_app 失败" in html and "app answers 503" in html

    md = md.decode("utf-8")
    assert "# 应急演练记录" in md and "## 九、存在问题" in md and record.id in md
    assert "<script>" not in md
    if outcome == "passed":
        assert "&lt;script&gt;" in md

    pages, text = pdf_pages_and_text(pdf)
    assert pages >= 2
    assert "应急演练记录" in text and "结果评估" in text
    assert record.id[:15] in text.replace("\n", "")


def test_an_interrupted_run_is_reported_once_sealed(tmp_path: Path) -> None:
    """An interrupted run stays pending (its journal) until it is resumed, aborted or sealed by
    a person (``drctl records seal``, ``drctl unlock``): ``records show`` shows it from the
    journal, marked not sealed; ``report`` renders only sealed records and says how to seal it;
    once sealed, it is reported as interrupted."""
    from drills.engine.runner import Runner, RunRequest

    home = make_home()
    try:
        with home_env(home):

            def stop_at_second(step_id: str, fn: Any) -> Any:
                if step_id == "second":
                    raise KeyboardInterrupt
                return fn()

            runner = Runner(
                RunRequest(
                    playbook=str(
                        playbook_file(
                            home,
                            "stopped",
                            [
                                shell("first", "echo first"),
                                shell("second", "echo 2", milestone="service_restored"),
                            ],
                        )
                    ),
                    environment=str(environment_file(home)),
                ),
                invoke=stop_at_second,
            )
            with pytest.raises(KeyboardInterrupt):
                runner.run()
        run_id = runner.run_id
        shown = drctl("records", "show", run_id, home=home)
        assert shown.returncode == 0, shown.stderr
        assert "interrupted" in shown.stdout and "not sealed yet" in shown.stdout
        refused = drctl("report", run_id, "--out", "-", home=home)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert f"record {run_id} is not sealed (interrupted)" in refused.stderr
        assert f"drctl records seal {run_id}" in refused.stderr
        sealed = drctl("records", "seal", run_id, home=home)
        assert sealed.returncode == 0 and f"sealed {run_id} (interrupted)" in sealed.stdout
        report = drctl("report", run_id, "--lang", "en", "--out", "-", home=home)
        assert report.returncode == 0, report.stderr
        assert "stopped by SIGINT (Ctrl-C) in the middle of step second" in report.stdout
        assert f"drctl resume {run_id}" in report.stdout  # what came next, as it was said
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_english_report_and_markdown_to_stdout(outcomes: tuple[Path, dict[str, Record]]) -> None:
    home, records = outcomes
    record = records["rolled_back"]
    html = drctl("report", record.id, "--lang", "en", "--out", "-", home=home)
    assert html.returncode == 0, html.stderr
    for text in (
        "Disaster-recovery drill record",
        "Planned start and end",
        "Participants and roles",
        "Rollback",
        "Rectification",
        "Plan revision",
        "Signatures",
        "Rolled back",
        "step promote failed",
        "GB/T 22239-2019 level 3, 8.1.4.9",
    ):
        assert text in html.stdout, text
    md = drctl("report", record.id, "--format", "md", "--lang", "en", "--out", "-", home=home)
    assert md.returncode == 0 and "# Disaster-recovery drill record" in md.stdout
    pdf = drctl("report", record.id[:20], "--format", "pdf", "--lang", "en", home=home)
    assert pdf.returncode == 0, pdf.stderr
    written = home / "reports" / f"{record.id}.en.pdf"
    assert f"report: {written}" in pdf.stdout and pdf_pages_and_text(written.read_bytes())[0] >= 1
    bad = drctl("report", record.id, "--lang", "fr", "--out", "-", home=home)
    assert bad.returncode == 2 and "--lang must be one of zh, en" in bad.stderr
    assert drctl("report", record.id, "--format", "docx", home=home).returncode == 2
    assert drctl("report", "no-such-record", home=home).returncode == 2


def test_annotations_fill_the_form(outcomes: tuple[Path, dict[str, Record]]) -> None:
    home, records = outcomes
    record = records["failed"]
    annotated = drctl(
        "records", "annotate", record.id,
        "--participant", "张三:演练总指挥:信息科",
        "--problem", "应用在切换后返回 503 <b>持续 40 秒</b>",
        "--rectify", "增加应用健康检查;李四;2026-12-31",
        "--plan-not-revised",
        "--planned-start", "2026-11-27T09:00+08:00",
        "--planned-end", "2026-11-27T10:00+08:00",
        "--system", "HIS 医院信息系统",
        home=home,
    )  # fmt: skip
    assert annotated.returncode == 0, annotated.stderr
    html = drctl("report", record.id, "--out", "-", home=home).stdout
    assert "HIS 医院信息系统" in html and "张三" in html and "演练总指挥" in html
    assert "应用在切换后返回 503 &lt;b&gt;持续 40 秒&lt;/b&gt;" in html
    assert "增加应用健康检查" in html and "李四" in html and "2026-12-31" in html
    assert "2026-11-27 09:00:00.000 至 2026-11-27 10:00:00.000" in html
    assert "预案是否修订" in html and re.search(r"十一、预案是否修订</h2>\s*<p>否", html)


def test_a_site_overrides_templates_and_settings(
    outcomes: tuple[Path, dict[str, Record]], tmp_path: Path
) -> None:
    home, records = outcomes
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "record.zh.html.j2").write_text(
        "<h1>本院格式 {{ doc.id }}</h1><p>{{ doc.status_label }} {{ doc.steps[1].output }}</p>",
        encoding="utf-8",
    )
    site = tmp_path / "site.yaml"
    site.write_text(
        "dr_level: {level: 5, note: {en: 'RTO minutes, RPO 0-30 min (contract annex 2)'}}\n"
        "systems: {rec: {en: HIS outpatient}}\n"
        "signatures: [{en: Head of IT}]\n",
        encoding="utf-8",
    )
    env = {"DRCTL_TEMPLATES": str(templates), "DRCTL_SITE_CONFIG": str(site)}
    record = records["passed"]
    zh = drctl("report", record.id, "--out", "-", home=home, env=env)
    assert zh.returncode == 0, zh.stderr
    assert zh.stdout.startswith(f"<h1>本院格式 {record.id}</h1>")
    assert "&lt;script&gt;" in zh.stdout  # a site's template is autoescaped too
    en = drctl("report", record.id, "--lang", "en", "--out", "-", home=home, env=env)
    assert "Disaster-recovery drill record" in en.stdout  # no English override: the shipped one
    assert "level 5" in en.stdout and "contract annex 2" in en.stdout
    assert "HIS outpatient" in en.stdout and "Head of IT" in en.stdout
    assert "Vendor engineer" not in en.stdout


def test_trend_shows_step_durations_and_rto_across_drills(tmp_path: Path) -> None:
    home = make_home()
    try:
        env = environment_file(home)
        steps = [
            shell("prepare", "sleep 0.05"),
            shell("switch", "sleep 0.1", milestone="service_restored"),
        ]
        with home_env(home):
            runs = [run(playbook_file(home, "trendy", steps), env) for _ in range(3)]
        text = drctl("records", "trend", "trendy", home=home)
        assert text.returncode == 0, text.stderr
        for r in runs:
            assert r.started_at[:19] in text.stdout
        assert "prepare" in text.stdout and "switch" in text.stdout and "RTO" in text.stdout
        out = tmp_path / "trend.html"
        html = drctl("records", "trend", "trendy", "--format", "html", "--out", str(out), home=home)
        assert html.returncode == 0, html.stderr
        page = out.read_text(encoding="utf-8")
        assert "<svg" in page and page.count("<polyline") == 3  # two steps and the RTO
        rto = [o.measured_seconds for r in runs for o in r.objectives if o.name == "rto"]
        assert all(v is not None and v >= 0.15 for v in rto)
        missing = drctl("records", "trend", "nothing-like-it", home=home)
        assert missing.returncode == 2 and "no drill records of playbook" in missing.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)


# -- freshness ---------------------------------------------------------------------------------


def synthetic(playbook: Path, environment: str, started: datetime, status: str) -> Record:
    run_id = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{playbook.stem}-{environment}-0000"
    at = started.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return build_record(
        [
            {
                "event": "run_started",
                "at": at,
                "offset": 0.0,
                "run_id": run_id,
                "mode": "drill",
                "playbook": {
                    "name": playbook.stem,
                    "sha256": __import__("hashlib").sha256(playbook.read_bytes()).hexdigest(),
                    "path": str(playbook),
                },
                "environment": {"name": environment},
                "objectives": {},
            },
            {"event": "run_ended", "at": at, "offset": 1.0, "status": status, "reason": "r"},
        ]
    )


def test_status_flags_stale_changed_and_uncovered_evidence(tmp_path: Path) -> None:
    from drills.ops.freshness import freshness

    fresh = tmp_path / "fresh.yaml"
    fresh.write_text("name: fresh\n")
    changed = tmp_path / "changed.yaml"
    changed.write_text("name: changed\n")
    old = tmp_path / "old.yaml"
    old.write_text("name: old\n")
    tz = UTC
    records = [
        synthetic(fresh, "his", datetime(2026, 4, 20, 2, tzinfo=tz), "passed"),
        synthetic(fresh, "his", datetime(2026, 4, 25, 2, tzinfo=tz), "failed"),
        synthetic(changed, "his", datetime(2026, 4, 21, 2, tzinfo=tz), "passed"),
        synthetic(old, "his", datetime(2025, 12, 1, 2, tzinfo=tz), "passed"),
    ]
    changed.write_text("name: changed\nsteps: [more]\n")  # revised after its drill
    config = {
        "max_age_days": 92,
        "holiday_window_days": 30,
        "holiday_min_days": 4,
        "expected": [{"playbook": "never", "environment": "his"}],
    }
    entries = {e.playbook: e for e in freshness(records, config, today=date(2026, 4, 28))}

    assert entries["fresh"].last_pass_date == "2026-04-20" and entries["fresh"].age_days == 8
    assert entries["fresh"].drills == 2 and entries["fresh"].playbook_changed is False
    assert entries["fresh"].holiday.startswith("Labour Day 2026-05-01–2026-05-05: covered by")
    assert not entries["fresh"].stale
    assert entries["changed"].stale and entries["changed"].playbook_changed is True
    assert "the playbook changed since the last pass" in entries["changed"].reasons
    assert entries["changed"].holiday_covered is False
    assert entries["old"].stale and "last pass 148 days ago (> 92)" in entries["old"].reasons
    assert entries["never"].stale and entries["never"].reasons[0] == "no passing drill"
    # The day before the break, an uncovered pair is flagged; weeks before, it is only due.
    later = {e.playbook: e for e in freshness(records, config, today=date(2026, 4, 30))}
    assert (
        "NOT covered" in later["old"].holiday
        and "Labour Day is not covered" in later["old"].reasons
    )
    earlier = {e.playbook: e for e in freshness(records[3:], config, today=date(2026, 3, 1))}
    assert "due between 2026-04-01 and" in earlier["old"].holiday


def test_status_without_a_holiday_schedule_says_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    from drills.ops.freshness import freshness

    monkeypatch.setitem(sys.modules, "drills.ops.holidays", None)  # as if it were not there
    entries = freshness([], {"expected": [{"playbook": "p", "environment": "e"}]})
    assert entries[0].holiday.startswith("unknown (holiday schedule unavailable:")
    assert entries[0].holiday_covered is None


def test_status_cli(outcomes: tuple[Path, dict[str, Record]]) -> None:
    home, records = outcomes
    shown = drctl("records", "status", "--json", home=home)
    assert shown.returncode == 0, shown.stderr
    entries = {e["playbook"]: e for e in json.loads(shown.stdout)}
    assert entries["passing"]["last_pass_id"] == records["passed"].id
    assert entries["passing"]["age_days"] == 0 and entries["passing"]["playbook_changed"] is False
    assert entries["failing"]["stale"] and entries["failing"]["last_pass_id"] is None
    check = drctl("records", "status", "--check", home=home)
    assert check.returncode == 1 and "STALE" in check.stdout and "passing" in check.stdout


# -- secrets -----------------------------------------------------------------------------------


def test_no_secret_reaches_a_record_log_or_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Pw-" + __import__("secrets").token_hex(12)
    home = make_home()
    try:
        env = environment_file(home, password_env="HIS_DB_LOGIN")
        steps = [
            shell("connect", 'echo "connecting with $HIS_DB_LOGIN"'),
            shell(
                "check",
                'echo "login $HIS_DB_LOGIN refused" >&2; exit 1',
                on_failure="continue",
                milestone="service_restored",
            ),
        ]
        caplog.set_level(logging.DEBUG, logger="drctl")
        with home_env(home, HIS_DB_LOGIN=secret):
            record = run(playbook_file(home, "leaky", steps), env, ticket=f"see {secret}")
            outputs: dict[str, bytes] = {}
            cli = {"HIS_DB_LOGIN": secret}
            for args in (
                ["records", "show", record.id, "--json"],
                ["records", "show", record.id],
                ["records", "list"],
                ["records", "verify"],
                ["records", "status"],
                ["records", "trend", "leaky"],
                ["report", record.id, "--out", "-"],
                ["report", record.id, "--format", "md", "--out", "-"],
                ["report", record.id, "--format", "pdf", "--out", str(tmp_path / "r.pdf")],
                ["records", "export", record.id, "--out", str(tmp_path / "bundle")],
            ):
                result = drctl(*args, home=home, env=cli)
                assert result.returncode in (0, 1), result.stderr
                outputs[" ".join(args)] = (result.stdout + result.stderr).encode()
        record_text = record.to_json()
        assert "[REDACTED]" in record_text  # it was there to leak, and was masked
        assert "connecting with [REDACTED]" in record_text
        outputs["record"] = record_text.encode()
        outputs["log"] = caplog.text.encode()
        _, pdf_text = pdf_pages_and_text((tmp_path / "r.pdf").read_bytes())
        outputs["pdf text"] = pdf_text.encode()
        for path in [*home.rglob("*"), *(tmp_path / "bundle").rglob("*"), tmp_path / "r.pdf"]:
            if path.is_file() and "keys" not in path.parts:
                outputs[str(path)] = path.read_bytes()
        assert any(name.endswith("records.sqlite3") for name in outputs)
        assert any(name.endswith(".journal.jsonl") for name in outputs)
        leaks = [name for name, data in outputs.items() if secret.encode() in data]
        assert leaks == []
    finally:
        shutil.rmtree(home, ignore_errors=True)


# -- Prefect artifacts --------------------------------------------------------------------------


@pytest.mark.prefect
def test_each_finished_run_publishes_its_summary_and_steps(prefect_api: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from drills.engine.runner import RunRequest
    from flows.artifacts import artifact_key
    from flows.drill import run_drill

    home = make_home()
    try:
        env = environment_file(home, "art")
        playbook = playbook_file(home, "artifact_drill.v2", PASSED_STEPS)
        with home_env(home):
            run_id = run_drill(RunRequest(playbook=str(playbook), environment=str(env)))
            record = RecordStore(home / "records", home / "locks").load(run_id)
        assert record.status == "passed"
        assert artifact_key("artifact_drill.v2") == "drill-artifact-drill-v2"
        with get_client(sync_client=True) as client:

            def read(key: str) -> list[Any]:
                found = client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
                )
                return [
                    a
                    for a in found
                    if str(a.flow_run_id) == record.orchestrator["prefect_flow_run_id"]
                ]

            summary = read("drill-artifact-drill-v2")
            steps = read("drill-artifact-drill-v2-steps")
        assert len(summary) == 1 and summary[0].type == "markdown"
        text = str(summary[0].data)
        assert "passed" in text and record.id in text and "| rto |" in text
        assert len(steps) == 1 and steps[0].type == "table"
        rows = json.loads(steps[0].data) if isinstance(steps[0].data, str) else steps[0].data
        assert [row["step"] for row in rows] == ["prepare", "switch"]
        assert all(row["status"] == "passed" for row in rows)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_timeline_draws_deadlines_and_puts_far_ones_past_an_axis_break() -> None:
    from drills.reports.charts import RIGHT, WIDTH, timeline

    def milestone(name: str, offset: float) -> dict[str, Any]:
        at = f"2026-11-27T00:00:0{int(offset)}.000Z"
        return {
            "event": "milestone",
            "at": at,
            "offset": offset,
            "milestone": {"name": name, "at": at, "offset": offset},
        }

    record = build_record(
        [
            {
                "event": "run_started",
                "at": "2026-11-27T00:00:00.000Z",
                "offset": 0.0,
                "run_id": "R",
                "mode": "drill",
                "playbook": {"name": "p"},
                "environment": {"name": "e"},
                "objectives": {
                    "rto": {"target": 1.0, "from": "outage_started", "to": "restored"},
                    "activation": {"target": 60, "from": "outage_started", "to": "restored"},
                },
            },
            milestone("outage_started", 0.5),
            milestone("restored", 1.8),
            {"event": "run_ended", "at": "x", "offset": 2.0, "status": "failed", "reason": "r"},
        ]
    )
    chart = timeline(record, {})
    lines = {line.label.split(" ")[0]: line for line in chart.deadlines}
    # rto: 1.3s measured against 1s: its deadline (0.5 + 1 = 1.5s) is drawn, as missed.
    assert lines["rto"].label == "rto ≤ 1.000s" and not lines["rto"].clipped
    assert not lines["rto"].met
    assert chart.left < lines["rto"].x < WIDTH - RIGHT
    main = chart.main_right - chart.left  # the run's own scale, left of the break
    assert lines["rto"].x == pytest.approx(chart.left + main * 1.5 / (2.0 * 1.04))
    # activation: its deadline (60.5s) is far beyond the 2s run: drawn past a break in the axis,
    # at its own time (a tick says it), not squeezed against the chart's edge.
    assert chart.axis_break is not None and lines["activation"].clipped
    assert chart.axis_break.x1 < lines["activation"].x < WIDTH - RIGHT - 10
    assert lines["activation"].label == "activation ≤ 1m00.0s"
    assert any(t.label == "1m00.5s" and t.x == lines["activation"].x for t in chart.axis)
    assert lines["rto"].x < chart.axis_break.x0
    assert [m.label for m in chart.milestones] == ["outage_started", "restored"]
