"""The site's report settings and templates: package defaults, overridden by the site.

- Settings: ``drills/reports/site.yaml`` (shipped), merged with ``$DRCTL_HOME/site.yaml`` or the
  file ``DRCTL_SITE_CONFIG`` names. Maps merge key by key; anything else is replaced.
- Templates: a site's own, in ``$DRCTL_HOME/templates`` or the directory ``DRCTL_TEMPLATES``
  names, are found before the shipped ones. A template named ``record.zh.html.j2`` is used for
  that language only; ``record.html.j2`` for every language. The shipped templates are the
  reference for the variables a template gets.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from drills.home import drctl_home
from drills.model.errors import InputError

PACKAGE = Path(__file__).resolve().parent
LANGUAGES = ("zh", "en")


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


def load_site_config(path: Path | None = None) -> dict[str, Any]:
    with (PACKAGE / "site.yaml").open(encoding="utf-8") as handle:
        config: dict[str, Any] = yaml.safe_load(handle)
    path = path or site_config_path()
    if path.exists():
        try:
            site = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML: {exc}") from exc
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
