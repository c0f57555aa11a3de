"""The English a record holds, shown in the report's language when the report is rendered.

A record is evidence: the runner's sentences (a record's reason, a step's reason, notes), the
checks' expectations and observations, milestone and objective names stay in the record as they
were written, in English. A Chinese report translates them here, from the tables in
``drills/reports/phrases.yaml`` (a site may add its own rows in ``$DRCTL_HOME/phrases.yaml``):
each known sentence pattern becomes its Chinese, its variable parts (node names, numbers,
durations, commands, host output) carried over; anything the tables do not know is shown in
Chinese framing with the original quoted and marked (「原文：…」), never as a bare English
sentence. An English report shows the record's text as it is.

What the translation gives is a ``Said``: plain text, code (commands, host output: evidence,
shown literally) and quoted originals, which the HTML templates print as markup
(``__html__``), the Markdown templates as Markdown (``__md__``) and an SVG label as plain text
(``str``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from markupsafe import escape

from drills.engine.documents import read_yaml
from drills.home import drctl_home
from drills.model.errors import InputError
from drills.reports.site import PACKAGE

PartKind = Literal["text", "code", "orig"]
Part = tuple[PartKind, str]

ORIGINAL = "原文"
_WORD = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*")
_CJK = re.compile(r"[\u2e80-\u9fff\uff00-\uffef]")
_OPTIONAL = re.compile(r"\[\[(.*?)\]\]", re.S)
_FIELD = re.compile(r"\{(\w+)\}")
_PUNCTUATION = ",;:.!?()[]{}\"'`「」（）：，；。、"
_RUN_REQUEST = re.compile(
    r"run request \(the playbook's target: (?P<target>[^,)]+)(?:, (?P<source>.*))?\)", re.S
)


def english_words_run(text: str) -> int:
    """The longest run of consecutive English words in ``text`` (tokens between spaces that are
    letters only, punctuation around them aside). Identifiers such as ``pg.is_primary``,
    ``app1`` or ``run_started``, numbers, units with digits and Chinese break a run."""
    longest = run = 0
    for token in _CJK.sub(" | ", text).split():
        if _WORD.fullmatch(token.strip(_PUNCTUATION)):
            run += 1
            longest = max(longest, run)
        else:
            run = 0
    return longest


@dataclass(frozen=True)
class Said:
    """Text in the report's language: plain text, code and quoted originals."""

    parts: tuple[Part, ...]

    def __str__(self) -> str:
        return "".join(
            f"「{ORIGINAL}：{value}」" if kind == "orig" else value for kind, value in self.parts
        )

    def __bool__(self) -> bool:
        return any(value for _, value in self.parts)

    def __html__(self) -> str:
        out = []
        for kind, value in self.parts:
            if kind == "code":
                out.append(f'<code class="said">{escape(value)}</code>')
            elif kind == "orig":
                out.append(
                    f'<span class="orig">「{ORIGINAL}：<span lang="en">{escape(value)}</span>」'
                    "</span>"
                )
            else:
                out.append(str(escape(value)))
        return "".join(out)

    def __md__(self) -> str:
        from drills.reports import md_escape

        out = []
        for kind, value in self.parts:
            if kind == "code":
                # inline HTML, its text escaped as every Markdown value is: shown literally
                out.append(f"<code>{md_escape(value)}</code>" if value else "")
            elif kind == "orig":
                out.append(f"「{ORIGINAL}：{md_escape(value)}」")
            else:
                out.append(str(md_escape(value)))
        return "".join(out)

    @property
    def unknown(self) -> list[str]:
        """The originals no table knew (for tests and for a site extending the tables)."""
        return [value for kind, value in self.parts if kind == "orig"]


def plain(value: str) -> Said:
    return Said((("text", value),))


def code(value: str) -> Said:
    return Said((("code", value),))


def joined(items: Iterable[Said | str], separator: str) -> Said:
    parts: list[Part] = []
    for n, item in enumerate(items):
        if n:
            parts.append(("text", separator))
        parts.extend(item.parts if isinstance(item, Said) else (("text", item),))
    return Said(tuple(parts))


def inline(text: Any) -> Said:
    """A message with `backticked` commands: the commands as code."""
    if isinstance(text, Said):
        return text
    pieces = str(text).split("`")
    return Said(
        tuple(("code" if n % 2 else "text", piece) for n, piece in enumerate(pieces) if piece)
    )


def compose(template: str, **values: Said | str | int | float) -> Said:
    """``template.format(**values)`` where a value may be a ``Said``: its parts are kept."""
    parts: list[Part] = []
    at = 0
    for field in _FIELD.finditer(template):
        if field.start() > at:
            parts.append(("text", template[at : field.start()]))
        at = field.end()
        value = values.get(field.group(1), field.group(0))
        parts.extend(value.parts if isinstance(value, Said) else (("text", str(value)),))
    if at < len(template):
        parts.append(("text", template[at:]))
    return Said(tuple(parts))


@dataclass(frozen=True)
class Pattern:
    regex: re.Pattern[str]
    zh: str
    parts: dict[str, str]


def _patterns(rows: list[dict[str, Any]] | None, where: str) -> list[Pattern]:
    patterns = []
    for row in rows or []:
        try:
            patterns.append(
                Pattern(
                    re.compile(str(row["en"]), re.S), str(row["zh"]), dict(row.get("parts") or {})
                )
            )
        except (KeyError, TypeError, re.error) as exc:
            raise InputError(f"{where}: a pattern row is not valid ({exc}): {row!r}") from exc
    return patterns


@dataclass(frozen=True)
class Tables:
    names: dict[str, dict[str, str]]
    sentences: list[Pattern]
    expected: list[Pattern]
    observed: list[Pattern]


def _read(path: Path) -> dict[str, Any]:
    # Bounded like every file a person writes (size, aliases, depth): documents.py.
    data = read_yaml(path, allow_empty=True).data or {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping")
    return data


def site_phrases_path() -> Path:
    configured = os.environ.get("DRCTL_PHRASES")
    return Path(configured).expanduser() if configured else drctl_home() / "phrases.yaml"


@cache
def _tables(site_file: str | None) -> Tables:
    shipped = _read(PACKAGE / "phrases.yaml")
    site = _read(Path(site_file)) if site_file else {}
    names: dict[str, dict[str, str]] = {}
    for key, value in shipped.items():
        if isinstance(value, dict):
            names[key] = {str(k): str(v) for k, v in value.items()} | {
                str(k): str(v) for k, v in (site.get(key) or {}).items()
            }
    where = site_file or "phrases.yaml"
    return Tables(
        names,
        _patterns(site.get("sentences"), where)
        + _patterns(shipped.get("sentences"), "phrases.yaml"),
        _patterns(site.get("expected"), where) + _patterns(shipped.get("expected"), "phrases.yaml"),
        _patterns(site.get("observed_patterns"), where)
        + _patterns(shipped.get("observed_patterns"), "phrases.yaml"),
    )


def tables() -> Tables:
    path = site_phrases_path()
    return _tables(str(path) if path.is_file() else None)


def _size(value: str) -> str:
    try:
        n = float(value)
    except ValueError:
        return value
    shown = n
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(shown) < 1024 or unit == "TiB":
            human = f"{shown:.0f} {unit}" if unit == "B" else f"{shown:.1f} {unit}"
            return f"{int(n)} 字节" + ("" if unit == "B" else f"（{human}）")
        shown /= 1024
    return value


class Phrasebook:
    """Translates what a record says into the report's language (zh); for en, says it as is."""

    def __init__(
        self, lang: str, table: Tables | None = None, zone: ZoneInfo | None = None
    ) -> None:
        self.lang = lang
        self.t = table if table is not None else tables()
        self.zone = zone  # times in sentences (ISO, UTC) are shown in this zone

    @property
    def translating(self) -> bool:
        return self.lang == "zh"

    def name(self, table: str, value: str) -> str:
        """A name from one of the name tables (milestones, objectives, kinds, roles...)."""
        if not self.translating:
            return value
        return self.t.names.get(table, {}).get(value, value)

    def milestone(self, value: str) -> str:
        return self.name("milestones", value)

    def objective(self, value: str) -> str:
        return self.name("objectives", value)

    def known(self, text: str) -> Said | None:
        """The translation of ``text`` if a sentence pattern knows it (zh only), else None."""
        if not self.translating or not text.strip():
            return None
        for pattern in self.t.sentences:
            match = pattern.regex.fullmatch(text.strip())
            if match is not None:
                return self._fill(pattern.zh, match, pattern.parts)
        return None

    def title(self, value: Any) -> Said | str:
        """A {zh:, en:} title (a playbook's, a step's) in the report's language; a zh report of
        a title written only in English quotes it as 原文."""
        if not isinstance(value, dict):
            return "" if value is None else str(value)
        own = str(value.get(self.lang) or "")
        if own or not self.translating:
            return own or str(value.get("en") or value.get("zh") or "")
        return self._fallback(str(value.get("en") or ""))

    def check(self, value: str) -> str:
        """The Chinese name of a check id, or '' when none is known (or for en)."""
        return self.t.names.get("checks", {}).get(value, "") if self.translating else ""

    # -- sentences -----------------------------------------------------------------------

    def sentence(self, text: str | None) -> Said | str:
        if text is None:
            return ""
        if not self.translating:
            return text
        return self._said(text, self.t.sentences, self._fallback)

    def expected(self, text: str) -> Said | str:
        if not self.translating:
            return text
        return self._said(text, self.t.expected, self._fallback)

    def observed(self, value: Any) -> Said | str:
        """What a check observed: a plain value, translated; a mapping, as key=value code."""
        if not self.translating:
            return str(value)
        if value is None:
            return "—"
        if isinstance(value, dict):
            return code(", ".join(f"{k}={v}" for k, v in value.items()))
        text = str(value)
        known = self.t.names.get("observed", {}).get(text)
        if known is not None:
            return plain(known)
        return self._said(text, self.t.observed, self._fallback)

    def source(self, text: str) -> Said | str:
        """Where an objective's target comes from: each ``; `` part from the sources table."""
        if not self.translating or not text:
            return text
        text = text.strip()
        match = _RUN_REQUEST.fullmatch(text)
        if match is not None:
            return self._fill(
                "运行请求指定的目标（预案原目标：{target}[[；{source}]]）",
                match,
                {"source": "source"},
            )
        sources = self.t.names.get("sources", {})
        parts = [part.strip() for part in text.split(";")]
        return joined(
            [plain(sources[p]) if p in sources else self._fallback(p) for p in parts], "；"
        )

    # -- machinery -----------------------------------------------------------------------

    def _fallback(self, text: str) -> Said:
        if english_words_run(text) >= 2:
            return Said((("orig", text),))
        return plain(text)

    def _said(self, text: str, patterns: list[Pattern], fallback: Callable[[str], Said]) -> Said:
        text = text.strip()
        for pattern in patterns:
            match = pattern.regex.fullmatch(text)
            if match is not None:
                return self._fill(pattern.zh, match, pattern.parts)
        return fallback(text)

    def _fill(self, template: str, match: re.Match[str], kinds: dict[str, str]) -> Said:
        groups = match.groupdict()

        def keep(segment: re.Match[str]) -> str:
            names = _FIELD.findall(segment.group(1))
            return segment.group(1) if all(groups.get(n) for n in names) else ""

        template = _OPTIONAL.sub(keep, template)
        parts: list[Part] = []
        at = 0
        for field in _FIELD.finditer(template):
            if field.start() > at:
                parts.append(("text", template[at : field.start()]))
            at = field.end()
            name = field.group(1)
            value = groups.get(name) or ""
            parts.extend(self._part(kinds.get(name, "name"), value).parts)
        if at < len(template):
            parts.append(("text", template[at:]))
        return Said(tuple(parts))

    def _part(self, kind: str, value: str) -> Said:
        said = self._part_any(kind, value)
        return said if isinstance(said, Said) else plain(said)

    def _part_any(self, kind: str, value: str) -> Said | str:
        if kind == "text":
            return self.sentence(value)
        if kind == "list":
            return joined([self.sentence(v) for v in value.split("; ")], "；")
        if kind == "code":
            return code(value) if value else plain("（无）")
        if kind == "milestone":
            return self.milestone(value)
        if kind == "milestones":
            return "、".join(self.milestone(v.strip()) for v in value.split(","))
        if kind == "objective":
            return self.objective(value)
        if kind == "measure":
            return self.name("measures", value)
        if kind == "measured":
            return "未测" if value == "not measured" else value
        if kind == "expected":
            return self.expected(value)
        if kind == "observed":
            return self._observed_repr(value)
        if kind == "observed_plain":
            return self.observed(value)
        if kind == "ids":
            return "无" if value in ("", "none") else value
        if kind == "modes":
            return "、".join(self.name("modes", v) for v in value.split(" and "))
        if kind == "role":
            return self.name("roles", value)
        if kind == "roles":
            return "、".join(self.name("roles", v.strip()) for v in value.split(","))
        if kind == "source":
            return self.source(value)
        if kind == "bytes":
            return _size(value)
        if kind == "status":
            return self.name("wal_status", value)
        if kind == "time":
            return self._time(value)
        if kind == "when":
            return {"before": "前", "after": "后"}.get(value, value)
        if kind == "people":
            return value
        return value

    def _time(self, value: str) -> str:
        """An ISO time as the rest of the report shows times: in its zone, to the millisecond."""
        if self.zone is None:
            return value
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        local = moment.astimezone(self.zone)
        return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"

    def _observed_repr(self, value: str) -> Said | str:
        """An observation as the runner wrote it into a sentence, with ``!r``."""
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            return self.observed(value[1:-1])
        if value.startswith("{") or value.startswith("["):
            return code(value)
        return self.observed(value)
