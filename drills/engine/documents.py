"""YAML documents that remember where each key is, so every problem names file and line.

PyYAML gives no line numbers once data is built, so the document is composed once into nodes, and
the nodes give both the data and a map from each key path to its line. Pydantic's error locations
are then looked up in that map.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from drills.model.errors import Problem, ValidationFailed

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class YamlDocument:
    path: str
    raw: bytes
    data: Any
    lines: dict[Loc, int]

    def line_of(self, loc: Iterable[str | int]) -> int | None:
        """The line of ``loc``, or of its nearest ancestor that has one."""
        parts = tuple(loc)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return self.lines.get((), None)

    def step_id_at(self, loc: Iterable[str | int]) -> str | None:
        parts = tuple(loc)
        if len(parts) >= 2 and parts[0] in ("steps", "rollback") and isinstance(parts[1], int):
            section = self.data.get(parts[0]) if isinstance(self.data, dict) else None
            if isinstance(section, list) and 0 <= parts[1] < len(section):
                item = section[parts[1]]
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    return str(item["id"])
                return f"#{parts[1] + 1}"
        return None

    def problem(self, loc: Iterable[str | int], message: str) -> Problem:
        loc = tuple(loc)
        return Problem(self.path, self.line_of(loc), self.step_id_at(loc), message)


def read_yaml(path: Path) -> YamlDocument:
    """Read one YAML document; syntax errors and duplicate keys become located problems."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValidationFailed([Problem(name, None, None, "no such file")]) from None
    except OSError as exc:
        raise ValidationFailed([Problem(name, None, None, f"cannot read: {exc}")]) from None
    try:
        text = raw.decode("utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except UnicodeDecodeError as exc:
        raise ValidationFailed([Problem(name, None, None, f"not UTF-8 text: {exc}")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = f"invalid YAML: {exc.problem or exc.context}"
        raise ValidationFailed([Problem(name, line, None, message)]) from None
    except yaml.YAMLError as exc:
        raise ValidationFailed([Problem(name, None, None, f"invalid YAML: {exc}")]) from None
    if node is None:
        raise ValidationFailed([Problem(name, 1, None, "the file is empty")])
    lines: dict[Loc, int] = {(): node.start_mark.line + 1}
    problems: list[Problem] = []
    _index(node, (), lines, problems, name)
    if problems:
        raise ValidationFailed(problems)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # e.g. a bad tag that composes but does not construct
        raise ValidationFailed([Problem(name, None, None, f"invalid YAML: {exc}")]) from None
    return YamlDocument(name, raw, data, lines)


def _index(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[Problem], name: str
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    Problem(name, line, None, f"key {key!r} repeats the one on line {seen[key]}")
                )
            seen[key] = line
            lines[(*loc, key)] = line
            _index(value_node, (*loc, key), lines, problems, name)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            _index(item, (*loc, index), lines, problems, name)


def model_problems(doc: YamlDocument, exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
        elif kind == "missing":
            message = f"missing key {loc[-1]!r}"
        else:
            where = ".".join(str(p) for p in loc)
            message = f"{where}: {error['msg']}" if where else str(error["msg"])
            message = message.replace("Value error, ", "")
        problems.append(doc.problem(loc, message))
    return problems


def parse_model(doc: YamlDocument, model: type[M], what: str) -> M:
    if not isinstance(doc.data, dict):
        raise ValidationFailed([doc.problem((), f"a {what} must be a mapping of keys")])
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        raise ValidationFailed(model_problems(doc, exc)) from None
