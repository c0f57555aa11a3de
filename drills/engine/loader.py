"""Load playbooks and environments from YAML, reporting every problem with file, line and step
(``drills.engine.documents`` keeps the lines and bounds the reading: file size, YAML nodes after
alias expansion, depth; ``drills.engine.validation`` checks the names).

Whatever the file holds, loading ends in a result or in ``ValidationFailed`` (exit 2), quickly:
never a traceback."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from drills.engine.catalogue import Catalogue
from drills.engine.documents import YamlDocument, capped, parse_model, read_yaml
from drills.engine.validation import playbook_problems
from drills.home import subdir
from drills.model.environment import Environment
from drills.model.errors import InputError, ValidationFailed
from drills.model.playbook import Playbook, playbook_sha256


@dataclass(frozen=True)
class LoadedPlaybook:
    playbook: Playbook
    path: str
    sha256: str
    doc: YamlDocument


def load_playbook(path: Path, catalogue: Catalogue | None = None) -> LoadedPlaybook:
    doc = read_yaml(path)
    playbook = parse_model(doc, Playbook, "playbook")
    problems = playbook_problems(playbook, doc, catalogue)
    if problems:
        raise ValidationFailed(capped(problems))
    return LoadedPlaybook(playbook, str(path), playbook_sha256(doc.raw), doc)


def load_environment_file(path: Path) -> Environment:
    return parse_model(read_yaml(path), Environment, "environment")


def bundled_playbooks() -> Path:
    """The playbooks shipped with drctl (the repository's ``playbooks/`` folder)."""
    spec = importlib.util.find_spec("playbooks")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if any(Path(location).glob("*.yaml")):
            return Path(location)
    raise InputError("the shipped playbooks are missing: reinstall drctl")


def resolve_playbook(ref: str) -> Path:
    """A playbook path from a file path or the name of a shipped playbook."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    shipped = bundled_playbooks()
    for candidate in (shipped / ref, shipped / f"{ref}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(
        sorted(p.stem for p in shipped.glob("*.yaml") if not p.stem.startswith("env"))
    )
    raise InputError(f"no playbook file or shipped playbook named {ref!r} (shipped: {known})")


def environments_dir() -> Path:
    return subdir("environments")


def resolve_environment(ref: str) -> Environment:
    """An environment from a file path, or by name from ``$DRCTL_HOME/environments``."""
    path = Path(ref).expanduser()
    if not path.is_file():
        env_dir = environments_dir()
        path = env_dir / f"{ref}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in env_dir.glob("*.yaml"))
            hint = (
                f"known: {', '.join(known)}" if known else "none yet; `drctl lab up` writes 'lab'"
            )
            raise InputError(
                f"no environment named {ref!r}: not a file, and not in {env_dir} ({hint})"
            )
    return load_environment_file(path)
