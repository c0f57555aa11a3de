"""Drill reports: HTML, Markdown and PDF, rendered with jinja2 from a sealed record alone.

``render_report(sealed, fmt=..., lang=...)`` gives the bytes of one drill's report; ``render_trend``
the trend of one playbook across drills. HTML templates autoescape everything, so text that came
from hosts (a step's output, an error) stays text; the Markdown templates escape every value they
print (``<``, ``>``, ``&`` become entities, Markdown's own marks get a backslash), so a Markdown
viewer shows it as text too. PDF is the HTML laid out by WeasyPrint; its Chinese text needs a CJK
font (Debian: ``fonts-wqy-zenhei``), which ``cjk_font_problem`` looks for.

A site's own templates (``$DRCTL_HOME/templates`` or ``DRCTL_TEMPLATES``) replace the shipped
ones of the same name; see ``drills.reports.site``.

A report is a function of the sealed record, its annotations and the site settings: rendering it
twice gives the same HTML and Markdown. A Chinese report shows no English sentence: what the
record says in English (the runner's sentences, check expectations, milestone names) is
translated when the report is rendered (``drills.reports.phrases``), never in the record; and
while the site's details are still the shipped placeholders a banner at the top says which.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import jinja2
from markupsafe import Markup

from drills.model.errors import InputError
from drills.model.redact import redact
from drills.reports.site import (
    LANGUAGES,
    PACKAGE,
    load_site_config,
    messages,
    site_templates_dir,
)
from drills.reports.view import ReportInput, build_view, quotes_unknown

if TYPE_CHECKING:
    from drills.model.record import Record
    from drills.records.store import Sealed

Format = Literal["html", "md", "pdf"]
FORMATS = ("html", "md", "pdf")
CJK_FONTS = ("WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC")

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def md_escape(value: Any) -> Any:
    """Every value a Markdown template prints: HTML entities for <, > and &, a backslash before
    Markdown's marks, line breaks as <br> so a table cell stays one row."""
    if value is None:
        return ""
    if isinstance(value, Markup):
        return value
    if hasattr(value, "__md__"):  # text a report translated (drills.reports.phrases.Said)
        return Markup(value.__md__())
    if isinstance(value, bool | int | float):
        return value
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return text.replace("\r\n", "\n").replace("\n", "<br>")


def md_code(value: Any) -> str:
    """A value for inside a Markdown code span: shown literally, so only backticks matter."""
    return str(value).replace("`", "'").replace("\n", " ")


def environment(fmt: str, templates: Path | None = None) -> jinja2.Environment:
    site_dir = templates or site_templates_dir()
    loaders: list[jinja2.BaseLoader] = []
    if site_dir.is_dir():
        loaders.append(jinja2.FileSystemLoader(str(site_dir)))
    loaders.append(jinja2.FileSystemLoader(str(PACKAGE / "templates")))
    loader = jinja2.ChoiceLoader(loaders)
    if fmt == "md":
        env = jinja2.Environment(
            loader=loader,
            autoescape=False,
            finalize=md_escape,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
    else:
        env = jinja2.Environment(
            loader=loader,
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return env


def _template(env: jinja2.Environment, name: str, lang: str, ext: str) -> jinja2.Template:
    return env.select_template([f"{name}.{lang}.{ext}.j2", f"{name}.{ext}.j2"])


def _words(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise InputError(f"--lang must be one of {', '.join(LANGUAGES)}, not {lang!r}")
    return messages()[lang]


def _svg(name: str, templates: Path | None, **context: Any) -> Markup:
    env = environment("svg", templates)
    return Markup(env.get_template(name).render(**context))


def report_input(sealed: Sealed) -> ReportInput:
    return ReportInput(
        record=sealed.record,
        entry=sealed.entry,
        annotations=[a for _, a in sealed.annotations],
        location=sealed.location,
    )


def render_report(
    sealed: Sealed | ReportInput,
    *,
    fmt: str = "html",
    lang: str | None = None,
    site: dict[str, Any] | None = None,
    templates: Path | None = None,
) -> bytes:
    """One drill's report. ``sealed`` is what the store gives (``RecordStore.sealed``)."""
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    site = site or load_site_config()
    lang = lang or str(site.get("language") or "zh")
    t = _words(lang)
    source = sealed if isinstance(sealed, ReportInput) else report_input(sealed)
    change = source.record.playbook.get("kind") == "change"
    if change:  # 系统更新记录: the record's form in an update's words, with the update log
        from drills.reports.change import change_view, change_words

        t = {**t, **change_words(lang)}
    doc = build_view(source, lang, site, t)
    form = "record"
    if change:
        doc["change"] = change_view(source.record, doc, lang)
    if doc["kind"] == "inspection":
        from drills.reports.inspection import inspection_view, plain_words

        form, t = "inspection", {**t, **plain_words(lang)}
        doc["inspection"] = inspection_view(source.record, doc, lang, site)
        doc["unknown"] = quotes_unknown(doc)
    context = {"doc": doc, "t": t, "site": site, "lang": lang}
    try:
        if fmt == "md":
            env = environment("md", templates)
            text = _template(env, form, lang, "md").render(**context)
            return redact(text).encode("utf-8")
        doc["timeline_svg"] = _svg("timeline.svg.j2", templates, chart=doc["timeline"], t=t)
        env = environment("html", templates)
        html = redact(_template(env, form, lang, "html").render(**context, pdf=fmt == "pdf"))
    except jinja2.TemplateError as exc:
        raise InputError(f"report template error: {exc}") from exc
    if fmt == "html":
        return html.encode("utf-8")
    return html_to_pdf(html)


def html_to_pdf(html: str) -> bytes:
    import logging

    from weasyprint import HTML  # type: ignore[import-untyped]

    # WeasyPrint logs every CSS property it does not support at WARNING; not the user's concern.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    pdf = HTML(string=html).write_pdf()
    assert pdf is not None
    return bytes(pdf)


def cjk_font_problem() -> str | None:
    """None if a CJK font is installed; otherwise what to install (the PDF would show boxes)."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return "fontconfig is not installed: Chinese text in PDFs needs fonts-wqy-zenhei"
    found = subprocess.run(
        [fc_list, ":lang=zh", "family"], capture_output=True, text=True, check=False
    ).stdout
    if any(name in found for name in CJK_FONTS) or found.strip():
        return None
    return (
        "no CJK font is installed: Chinese text in the PDF shows as boxes "
        "(apt-get install fonts-wqy-zenhei)"
    )


def render_trend(
    playbook: str,
    records: list[Record],
    *,
    fmt: str = "html",
    lang: str | None = None,
    site: dict[str, Any] | None = None,
    templates: Path | None = None,
) -> bytes:
    from drills.reports.trend import trend_view

    if fmt not in ("html", "md"):
        raise InputError(f"a trend renders as html or md, not {fmt!r}")
    site = site or load_site_config()
    lang = lang or str(site.get("language") or "zh")
    t = _words(lang)
    doc = trend_view(playbook, records, site, lang)
    context = {"doc": doc, "t": t, "site": site, "lang": lang}
    if fmt == "md":
        text = _template(environment("md", templates), "trend", lang, "md").render(**context)
        return redact(text).encode("utf-8")
    doc["chart_svg"] = _svg("trend.svg.j2", templates, chart=doc["chart"], t=t)
    html = _template(environment("html", templates), "trend", lang, "html").render(**context)
    return redact(html).encode("utf-8")
