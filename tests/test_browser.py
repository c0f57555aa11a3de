"""Reports as a reader's browser shows them: headless Chromium lays out the record report and the
trend of real drills on the one-host lab, and the test reads what it drew (``tests.browser``).

- No two texts of a chart overlap (timeline: axis ticks, step labels, durations, milestone and
  deadline labels; trend: both axes' labels, the target's label, the failure marks, the legend),
  compared by their rendered boxes, and none is cut off at the chart's edge.
- A Chinese report shows no English sentence in its rendered text (``innerText``; the evidence
  shown as is, commands and host output in ``<pre>``/``<code>``, aside).
- A deadline far beyond the run is drawn past the axis break, at its own time.

The records are real: switchovers (one failing its RTO), a failover with its 120 s RTO against a
run of seconds, and an inspection, all run on the lab. The detectors are shown to catch what
they look for on doctored copies of those pages. Without a browser the tests are skipped, and
say why.
"""

from __future__ import annotations

import html as html_lib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drills.model.durations import format_seconds
from drills.model.record import Record
from drills.model.request import RunRequest
from drills.records.store import RecordStore
from drills.reports import render_report, render_trend
from tests.browser import (
    Page,
    TextBox,
    browser_problem,
    lay_out,
    outside_their_chart,
    overlapping,
    screenshot,
)
from tests.labs import AnyLab
from tests.test_report_layout import english_sentences

pytestmark = [pytest.mark.lab]

OPERATOR = "张工"
SWITCHOVERS = 3  # passing ones; one more fails its RTO


@pytest.fixture(scope="session")
def browser() -> None:
    """Skips, saying why, where headless Chromium cannot run; session-scoped, so that it is
    asked before the (session-scoped) lab is started for nothing."""
    problem = browser_problem()
    if problem is not None:
        pytest.skip(problem)


@dataclass(frozen=True)
class Drills:
    home: Path
    switchovers: list[Record]  # oldest first; the last one failed its RTO
    failover: Record
    inspection: Record

    @property
    def store(self) -> RecordStore:
        return RecordStore(self.home / "records", self.home / "locks")

    def report(self, record: Record, lang: str) -> str:
        return render_report(self.store.sealed(record.id), fmt="html", lang=lang).decode()

    def trend(self, lang: str) -> str:
        return render_trend("pg-switchover", self.switchovers, lang=lang).decode()


@pytest.fixture(scope="module")
def drills(browser: None, lab: Path) -> Iterator[Drills]:
    """Real drills on the lab, in the lab's home, run as `drctl run` runs them without Prefect."""
    from flows.direct import run_direct

    on_lab = AnyLab(lab, "lab")

    def drill(playbook: str, **more: object) -> Record:
        on_lab.wait_streaming()
        request = RunRequest(
            playbook=playbook, environment="lab", operator=OPERATOR, ticket="DR-2026-11", **more
        )
        return on_lab.store.load(run_direct(request))

    with on_lab.active():
        switchovers = [drill("pg-switchover") for _ in range(SWITCHOVERS)]
        switchovers.append(drill("pg-switchover", objectives={"rto": "1ms"}))
        failover = drill("pg-failover")
        inspection = drill("pg-inspection")
        on_lab.wait_streaming()
        yield Drills(lab, switchovers, failover, inspection)


def test_the_drills_are_the_ones_the_pages_need(drills: Drills) -> None:
    assert [r.status for r in drills.switchovers] == ["passed"] * SWITCHOVERS + ["failed"]
    assert drills.switchovers[-1].reason.startswith("objectives missed: rto")
    assert drills.failover.status == "passed", drills.failover.reason
    rto = next(o for o in drills.failover.objectives if o.name == "rto")
    # the far deadline: its target many times the run
    assert rto.target_seconds > 3 * (drills.failover.duration_seconds or 0.0)
    assert drills.inspection.playbook["kind"] == "inspection"


# -- what the browser shows ------------------------------------------------------------------


def shown(page: str, tmp_path: Path, name: str) -> tuple[Page, str]:
    """The page laid out, and where a screenshot of it is (for the assertion messages): in
    DRCTL_BROWSER_SHOTS if set (to keep them), else in the test's tmp dir."""
    shots = Path(os.environ.get("DRCTL_BROWSER_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    png = shots / f"{name}.png"
    screenshot(page, png)
    return lay_out(page), str(png)


def described(pairs: list[tuple[TextBox, TextBox]]) -> list[str]:
    return [f"{a.text!r} [{a.kind}] over {b.text!r} [{b.kind}]" for a, b in pairs]


PAGES = [
    ("switchover", "zh"),
    ("switchover", "en"),
    ("failed_switchover", "zh"),
    ("failover", "zh"),
    ("failover", "en"),
    ("inspection", "zh"),
    ("inspection", "en"),
    ("trend", "zh"),
    ("trend", "en"),
]


def page_of(drills: Drills, name: str, lang: str) -> str:
    if name == "trend":
        return drills.trend(lang)
    record = {
        "switchover": drills.switchovers[0],
        "failed_switchover": drills.switchovers[-1],
        "failover": drills.failover,
        "inspection": drills.inspection,
    }[name]
    return drills.report(record, lang)


@pytest.mark.parametrize(("name", "lang"), PAGES)
def test_no_label_overlaps_another_or_leaves_its_chart(
    drills: Drills, name: str, lang: str, tmp_path: Path
) -> None:
    page, png = shown(page_of(drills, name, lang), tmp_path, f"{name}-{lang}")
    if name != "inspection":  # the inspection report has no chart
        assert page.charts, png
        labels = [t for t in page.texts if "label" in t.kind.split() or t.kind == "x-time"]
        assert labels, png
    clashes = overlapping(page.texts)
    assert clashes == [], (described(clashes), png)
    cut = outside_their_chart(page)
    assert cut == [], ([t.text for t in cut], png)


@pytest.mark.parametrize(
    "name", ["switchover", "failed_switchover", "failover", "inspection", "trend"]
)
def test_a_chinese_page_shows_no_english_sentence(
    drills: Drills, name: str, tmp_path: Path
) -> None:
    page, png = shown(page_of(drills, name, "zh"), tmp_path, f"{name}-zh")
    assert english_sentences(page.visible_text) == [], png
    assert "原文" not in page.visible_text, png  # nothing had to be quoted untranslated


def test_the_failovers_far_deadline_is_drawn_past_the_axis_break(
    drills: Drills, tmp_path: Path
) -> None:
    page, png = shown(drills.report(drills.failover, "zh"), tmp_path, "failover-zh")
    assert len(page.breaks) == 1, png
    axis_break = page.breaks[0]
    rto = next(o for o in drills.failover.objectives if o.name == "rto")
    start = {m.name: m.offset for m in drills.failover.milestones}[rto.basis.split(" → ")[0]]
    deadline = next(t for t in page.texts if t.kind == "label deadline" and "RTO" in t.text)
    ticks = [t for t in page.texts if t.kind == "tick"]
    far = [t for t in ticks if t.left > axis_break.right]
    near = [t for t in ticks if t.right < axis_break.left]
    # the deadline's own time on the far side, the run's scale on the near side
    assert [t.text for t in far] == [format_seconds(start + rto.target_seconds)], png
    assert len(near) >= 3, png
    assert deadline.left > axis_break.left, png
    chart = page.charts[0]
    assert deadline.right <= chart.right, png
    # every step's duration stays left of the break
    durations = [t for t in page.texts if t.kind == "took"]
    assert len(durations) == len(drills.failover.steps), png
    assert all(t.right <= axis_break.left for t in durations), png


def test_the_trend_shows_the_failed_drill_and_dated_times(drills: Drills, tmp_path: Path) -> None:
    page, png = shown(drills.trend("zh"), tmp_path, "trend-zh")
    assert [t.text for t in page.texts if t.kind == "failed"] == ["✕"], png
    times = [t for t in page.texts if t.kind == "x-time"]
    dates = [t for t in page.texts if t.kind == "x-date"]
    assert len(times) == len(drills.switchovers), png
    # drills run back to back: each still has a time of its own on the axis
    assert len({t.text for t in times}) == len(times), ([t.text for t in times], png)
    assert len(dates) == 1, png  # one day: its date once
    # the target's label names both targets: the playbook's, and the one the run request set
    label = next(t for t in page.texts if t.kind == "target-label")
    targets = {
        o.target_seconds for r in drills.switchovers for o in r.objectives if o.name == "rto"
    }
    assert len(targets) == 2
    assert all(format_seconds(t) in label.text for t in targets), (label, png)


# -- the detectors catch what they look for ------------------------------------------------------

LABEL = re.compile(r'<text x="([\d.]+)" y="([\d.]+)"( text-anchor="\w+" [^>]*class="label [^"]*">)')


def label_text(page: str, label: re.Match[str]) -> str:
    return html_lib.unescape(page[label.end() : page.index("</text>", label.end())])


def test_a_planted_overlap_is_found(drills: Drills) -> None:
    page = drills.report(drills.switchovers[0], "zh")
    labels = list(LABEL.finditer(page))
    assert len(labels) >= 2
    first, second = labels[0], labels[1]
    # the second label drawn where the first is
    doctored = (
        page[: second.start()]
        + f'<text x="{first.group(1)}" y="{first.group(2)}"{second.group(3)}'
        + page[second.end() :]
    )
    clean, planted = lay_out(page), lay_out(doctored)
    assert overlapping(clean.texts) == []
    clashes = {(a.text, b.text) for a, b in overlapping(planted.texts)}
    assert clashes and clashes <= {(label_text(page, first), label_text(page, second))}


def test_a_label_past_the_charts_edge_is_found(drills: Drills) -> None:
    page = drills.report(drills.switchovers[0], "zh")
    first = next(LABEL.finditer(page))
    width = float(re.search(r'viewBox="0 0 (\d+) ', page).group(1))  # type: ignore[union-attr]
    doctored = (
        page[: first.start()]
        + f'<text x="{width - 5:.1f}" y="{first.group(2)}"{first.group(3)}'
        + page[first.end() :]
    )
    cut = outside_their_chart(lay_out(doctored))
    assert len(cut) == 1 and cut[0].kind.startswith("label")


def test_a_planted_english_sentence_is_found_and_evidence_is_not(drills: Drills) -> None:
    page = drills.report(drills.switchovers[0], "zh")
    said = "the standby was promoted in time"
    shown_text = page.replace("</body>", f"<p>{said}</p></body>", 1)
    as_evidence = page.replace("</body>", f"<pre>{said}</pre></body>", 1)
    hidden = page.replace("</body>", f'<p style="display:none">{said}</p></body>', 1)
    assert english_sentences(lay_out(shown_text).visible_text) == [said]
    assert english_sentences(lay_out(as_evidence).visible_text) == []
    assert english_sentences(lay_out(hidden).visible_text) == []
