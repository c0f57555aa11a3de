"""A real browser's view of a report: headless Chromium (Debian's package ``chromium``) lays the
HTML out as a reader's browser does, with the fonts installed here, and the tests read back the
rendered boxes of the charts' texts and the text a reader sees.

How: a copy of the page gets a small measuring script at the end of its body; Chromium loads it
from a file, the script measures every SVG ``<text>`` (``getBoundingClientRect``: the laid-out
box, after the chart is scaled to the page) and reads the page's visible text (``innerText``,
with the evidence shown as is, ``<pre>`` and ``<code>``, hidden first), and writes what it found
into the DOM as JSON, which ``chromium --dump-dom`` prints. Why not a browser-automation library:
Playwright and pyppeteer download a browser build of their own (which cannot be fetched here, and
is not Debian's), and a DevTools-protocol client needs a websocket library and a session; one
page load whose DOM is printed needs nothing but the browser.

Chromium is started as the machine needs it: as root without its sandbox, without a GPU, and with
nothing that reaches the network (a fresh empty profile, no QUIC, no background networking, no
component updates, no sync). It is one process group of ours, ended by its id if it overruns.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
)
WINDOW = (1100, 3000)
TIMEOUT = 90.0
MARK = "drctl-layout"

# The measuring script. It runs once, at the end of the body (every font here is a system font:
# nothing to wait for), and leaves its findings in <pre id="drctl-layout"> for --dump-dom.
MEASURE = """
<script>
(function () {
  function box(r) { return [r.left, r.top, r.right, r.bottom]; }
  var charts = [], texts = [], breaks = [];
  document.querySelectorAll("svg").forEach(function (svg, n) {
    charts.push({index: n, box: box(svg.getBoundingClientRect()),
                 title: (svg.querySelector("title") || {}).textContent || ""});
    svg.querySelectorAll("text").forEach(function (t) {
      if (!t.textContent.trim()) { return; }
      texts.push({chart: n, kind: t.getAttribute("class") || "", text: t.textContent,
                  box: box(t.getBoundingClientRect())});
    });
    svg.querySelectorAll(".axis-break").forEach(function (e) {
      breaks.push({chart: n, box: box(e.getBoundingClientRect())});
    });
  });
  // What a reader sees: the page's rendered text, less the evidence shown as is.
  document.querySelectorAll("pre, code").forEach(function (e) { e.style.display = "none"; });
  var visible = document.body.innerText;
  var out = document.createElement("pre");
  out.id = "@MARK@";
  out.textContent = JSON.stringify(
    {charts: charts, texts: texts, breaks: breaks, visible: visible});
  document.body.appendChild(out);
})();
</script>
""".replace("@MARK@", MARK)


@dataclass(frozen=True)
class TextBox:
    """One SVG text as laid out: which chart, its class, its text, its box in CSS pixels."""

    chart: int
    kind: str
    text: str
    left: float
    top: float
    right: float
    bottom: float

    def overlap(self, other: TextBox) -> tuple[float, float]:
        """How far the two boxes run into each other, across and down (<= 0: apart)."""
        across = min(self.right, other.right) - max(self.left, other.left)
        down = min(self.bottom, other.bottom) - max(self.top, other.top)
        return across, down


@dataclass(frozen=True)
class Chart:
    index: int
    title: str
    left: float
    top: float
    right: float
    bottom: float


@dataclass(frozen=True)
class AxisBreak:
    """The marks of a broken axis (the two slashes), as drawn."""

    chart: int
    left: float
    top: float
    right: float
    bottom: float


@dataclass(frozen=True)
class Page:
    charts: list[Chart]
    texts: list[TextBox]
    breaks: list[AxisBreak]
    visible_text: str  # innerText, <pre> and <code> hidden

    def texts_of(self, chart: int) -> list[TextBox]:
        return [t for t in self.texts if t.chart == chart]


class BrowserFailed(Exception):
    """Chromium did not start, overran, or left no measurement."""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@cache
def browser_problem() -> str | None:
    """None when headless Chromium runs here; otherwise why not, and how to install it."""
    exe = chromium()
    if exe is None:
        return (
            "no headless browser: Debian's chromium is not installed "
            "(.ci/system-packages installs it as root: apt-get install chromium)"
        )
    try:
        lay_out("<!doctype html><html><body><svg><text x='5' y='15'>ok</text></svg></body></html>")
    except BrowserFailed as exc:
        return f"headless Chromium does not run here: {exc}"
    return None


def _chromium(args: list[str], profile: Path) -> str:
    exe = chromium()
    if exe is None:
        raise BrowserFailed("chromium is not installed")
    argv = [exe, *FLAGS, f"--user-data-dir={profile}", *args]
    # A process group of its own: Chromium's helpers (zygote, renderer) end with it.
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={**os.environ, "HOME": str(profile)},
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise BrowserFailed(f"chromium did not finish within {TIMEOUT:g}s") from None
    if proc.returncode != 0:
        tail = " ".join(err.strip().splitlines()[-3:])
        raise BrowserFailed(f"chromium exited {proc.returncode}: {tail}")
    return out


def lay_out(page: str, *, window: tuple[int, int] = WINDOW) -> Page:
    """Load ``page`` (HTML) in headless Chromium and read back what it laid out."""
    if "</body>" in page:
        doctored = page.replace("</body>", MEASURE + "</body>", 1)
    else:
        doctored = page + MEASURE
    with tempfile.TemporaryDirectory(prefix="drctl-browser-") as tmp:
        path = Path(tmp) / "page.html"
        path.write_text(doctored, encoding="utf-8")
        profile = Path(tmp) / "profile"
        profile.mkdir()
        dom = _chromium(
            [
                f"--window-size={window[0]},{window[1]}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                path.as_uri(),
            ],
            profile,
        )
    found = re.search(rf'<pre id="{MARK}">(.*?)</pre>', dom, re.S)
    if found is None:
        raise BrowserFailed("the measuring script left no result (did the page load?)")
    data = json.loads(html_lib.unescape(found.group(1)))
    return Page(
        charts=[Chart(c["index"], c["title"], *c["box"]) for c in data["charts"]],
        texts=[TextBox(t["chart"], t["kind"], t["text"], *t["box"]) for t in data["texts"]],
        breaks=[AxisBreak(b["chart"], *b["box"]) for b in data["breaks"]],
        visible_text=data["visible"],
    )


def screenshot(page: str, png: Path, *, window: tuple[int, int] = WINDOW) -> Path:
    """A PNG of ``page`` as Chromium draws it (for a person to look at when a check fails)."""
    with tempfile.TemporaryDirectory(prefix="drctl-browser-") as tmp:
        path = Path(tmp) / "page.html"
        path.write_text(page, encoding="utf-8")
        profile = Path(tmp) / "profile"
        profile.mkdir()
        _chromium(
            [f"--window-size={window[0]},{window[1]}", f"--screenshot={png}", path.as_uri()],
            profile,
        )
    return png


# Two boxes that run into each other by less than this (CSS pixels) in either direction only
# touch: a glyph's box includes the font's line gap, which no reader sees as an overlap.
TOUCH = 1.0


def overlapping(texts: list[TextBox], *, touch: float = TOUCH) -> list[tuple[TextBox, TextBox]]:
    """Every pair of texts of one chart whose rendered boxes overlap."""
    pairs = []
    for n, a in enumerate(texts):
        for b in texts[n + 1 :]:
            if a.chart != b.chart:
                continue
            across, down = a.overlap(b)
            if across > touch and down > touch:
                pairs.append((a, b))
    return pairs


def outside_their_chart(page: Page, *, touch: float = TOUCH) -> list[TextBox]:
    """Texts drawn (partly) outside their chart's box: cut off where the SVG ends."""
    charts = {c.index: c for c in page.charts}
    cut = []
    for t in page.texts:
        c = charts[t.chart]
        if (
            t.left < c.left - touch
            or t.right > c.right + touch
            or t.top < c.top - touch
            or t.bottom > c.bottom + touch
        ):
            cut.append(t)
    return cut
