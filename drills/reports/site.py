"""The site's report settings and templates: package defaults, overridden by the site.

- Settings: ``drills/reports/site.yaml`` (shipped), merged with ``$DRCTL_HOME/site.yaml`` or the
  file ``DRCTL_SITE_CONFIG`` names. Maps merge key by key; anything else is replaced.
- Templates: a site's own, in ``$DRCTL_HOME/templates`` or the directory ``DRCTL_TEMPLATES``
  names, are found before the shipped ones. A template named ``record.zh.html.j2`` is used for
  that language only; ``record.html.j2`` for every language. The shipped templates are the
  reference for the variables a template gets.
- Phrases: the Chinese of what records say in English, ``drills/reports/phrases.yaml``, with a
  site's own rows in ``$DRCTL_HOME/phrases.yaml`` (or the file ``DRCTL_PHRASES`` names); see
  ``drills.reports.phrases``.
- Placeholders: the site details a report names (hospital, location, department, the systems,
  the GB/T 20988 level, the signatories, clause numbers) ship as placeholders; while one is left
  as shipped, ``default_fields`` names it and the report says so in a banner.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from drills.engine.documents import read_yaml
from drills.home import drctl_home
from drills.model.errors import InputError

PACKAGE = Path(__file__).resolve().parent
LANGUAGES = ("zh", "en")
DEFAULT_TIMEZONE = "Asia/Shanghai"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def site_config_path() -> Path:
    configured = os.environ.get("DRCTL_SITE_CONFIG")
    return Path(configured).expanduser() if configured else drctl_home() / "site.yaml"


@cache
def _shipped() -> dict[str, Any]:
    with (PACKAGE / "site.yaml").open(encoding="utf-8") as handle:
        config: dict[str, Any] = yaml.safe_load(handle)
    return config


def shipped_config() -> dict[str, Any]:
    """The package's own settings (``drills/reports/site.yaml``), a fresh copy."""
    import copy

    return copy.deepcopy(_shipped())


def load_site_config(path: Path | None = None) -> dict[str, Any]:
    config = shipped_config()
    path = path or site_config_path()
    if path.exists():
        # Bounded like every file a person writes (size, aliases, depth): documents.py.
        site = read_yaml(path, allow_empty=True).data or {}
        if not isinstance(site, dict):
            raise InputError(f"{path}: expected a mapping of settings")
        config = _merge(config, site)
    if config.get("language") not in LANGUAGES:
        raise InputError(f"site setting language must be one of {', '.join(LANGUAGES)}")
    return config


@cache
def messages() -> dict[str, dict[str, str]]:
    with (PACKAGE / "messages.yaml").open(encoding="utf-8") as handle:
        data: dict[str, dict[str, str]] = yaml.safe_load(handle)
    return data


def site_templates_dir() -> Path:
    configured = os.environ.get("DRCTL_TEMPLATES")
    return Path(configured).expanduser() if configured else drctl_home() / "templates"


def text(value: Any, lang: str) -> str:
    """A setting that may be a plain string or a {zh:, en:} map."""
    if isinstance(value, dict):
        return str(value.get(lang) or value.get("en") or value.get("zh") or "")
    return "" if value is None else str(value)


def zone_name(site: dict[str, Any]) -> str:
    """The time zone every time in a report is shown in: the site's, else Asia/Shanghai."""
    return str(site.get("timezone") or DEFAULT_TIMEZONE)


# The site details a report names, in the order its banner lists them.
SITE_FIELDS = (
    "organisation",
    "system",
    "location",
    "department",
    "dr_level",
    "signatures",
    "clauses",
)


def default_fields(site: dict[str, Any], lang: str, *, system_known: bool) -> list[str]:
    """The site details (``SITE_FIELDS``) still as shipped (placeholders) or unset, for the
    report's banner. ``system_known``: the environment has a system name (site or annotation)."""
    shipped = _shipped()
    gaps = []
    for key in ("organisation", "location", "department"):
        value = text(site.get(key), lang).strip()
        if not value or value == text(shipped.get(key), lang):
            gaps.append(key)
    if not system_known:
        gaps.append("system")
    level = site.get("dr_level")
    if not isinstance(level, dict) or level.get("level") is None:
        gaps.append("dr_level")
    if not site.get("signatures") or site.get("signatures") == shipped.get("signatures"):
        gaps.append("signatures")
    standards = site.get("standards") or []
    if any(isinstance(s, dict) and "clause" in s and not s.get("clause") for s in standards):
        gaps.append("clauses")
    return [key for key in SITE_FIELDS if key in gaps]
