"""YAML documents that remember where each key is, so every problem names file and line.

PyYAML gives no line numbers once data is built, so the document is composed once into nodes, and
the nodes give both the data and the line of each key path (``LineIndex``). Pydantic's error
locations are then looked up there.

Reading is bounded, so a hostile or broken file costs milliseconds and a few megabytes, never
minutes or gigabytes (``YamlLimits``):

- the file's size (``MAX_FILE_BYTES``), checked before it is read;
- the number of YAML nodes after alias expansion (``MAX_YAML_NODES``), counted while composing:
  an alias counts every node of what it refers to, at each use, so a "billion laughs" stops at
  the limit without being expanded; a recursive alias (an anchor used inside itself, which
  PyYAML would compose as a cyclic graph) is refused;
- the nesting depth (``MAX_DEPTH``), aliases expanded too; deep nesting would otherwise end in a
  RecursionError.

Each limit's problem names the file, the line (of the alias, or of the node past the limit) and
the limit.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from drills.model.errors import Problem, ValidationFailed

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

MAX_FILE_BYTES = 1024 * 1024  # a playbook, environment or drill definition: 1 MiB
MAX_YAML_NODES = 100_000  # after alias expansion; the largest shipped playbook has ~430
MAX_DEPTH = 64  # nested mappings and sequences; shipped files nest at most 8 deep
MAX_PROBLEMS = 100  # reported per file; the rest are counted


@dataclass(frozen=True)
class YamlLimits:
    max_bytes: int = MAX_FILE_BYTES
    max_nodes: int = MAX_YAML_NODES
    max_depth: int = MAX_DEPTH


DEFAULT_LIMITS = YamlLimits()


@dataclass(frozen=True)
class YamlDocument:
    path: str
    raw: bytes
    data: Any
    lines: LineIndex

    def line_of(self, loc: Iterable[str | int]) -> int | None:
        """The line of ``loc``, or of its nearest ancestor that has one."""
        return self.lines.nearest(tuple(loc))

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
        step = self.step_id_at(loc)
        return Problem(
            self.path,
            self.line_of(loc),
            printable(step) if step is not None else None,
            printable(message),
        )


def printable(text: str) -> str:
    """``text`` with what a terminal would not show as-is (a newline in a key, an escape
    sequence) written as Python escapes, so that one problem stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _LimitExceeded(Exception):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.line = mark.line + 1 if mark is not None else None


class _BoundedComposer(Composer):
    """PyYAML's composer, counting nodes (aliases expanded) and depth as it goes, and noting
    repeated keys.

    For each anchored node it keeps how many nodes it stands for and how deep it reaches, so an
    alias is charged its full expansion at once, and an alias to a node still being composed
    (a recursive alias) is caught before it makes a cycle. The composing itself is PyYAML's
    (``Composer.compose_*_node``), written out here without its path-resolver hooks, which
    ``Resolver`` does not use."""

    # From the parser (libyaml's or PyYAML's) and the resolver.
    peek_event: Any
    get_event: Any
    check_event: Any
    resolve: Any

    def _init_limits(self, limits: YamlLimits) -> None:
        self._limits = limits
        self._nodes = 0  # nodes so far, aliases expanded
        self._depth = 0  # collections open around the current event
        self._reach = 0  # deepest level reached (reset inside each anchored node)
        self._done: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (nodes, height)
        self.repeated_keys: list[tuple[int, str, int]] = []  # (line, key, first line)

    def _too_many(self, mark: Any, alias: str | None) -> _LimitExceeded:
        what = f"alias *{alias} brings the document past" if alias else "more than"
        return _LimitExceeded(
            f"{what} {self._limits.max_nodes:,} YAML nodes, the limit "
            "(an alias counts every node it refers to, each time it is used)",
            mark,
        )

    def _too_deep(self, mark: Any, alias: str | None) -> _LimitExceeded:
        what = f"alias *{alias} nests the document" if alias else "nested"
        return _LimitExceeded(
            f"{what} more than {self._limits.max_depth} levels deep, the limit", mark
        )

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        kind = type(event)
        if kind is AliasEvent:
            return self._compose_alias(event)
        self._nodes += 1
        if self._nodes > self._limits.max_nodes:
            raise self._too_many(event.start_mark, None)
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                self.anchors[anchor].start_mark,
                "second occurrence",
                event.start_mark,
            )
        if kind is ScalarEvent:
            self.get_event()
            tag = event.tag
            if tag is None or tag == "!":
                tag = self.resolve(ScalarNode, event.value, event.implicit)
            node: yaml.Node = ScalarNode(
                tag, event.value, event.start_mark, event.end_mark, style=event.style
            )
            if anchor is not None:
                self.anchors[anchor] = node
                self._done[id(node)] = (1, 0)
            return node
        base = self._depth
        if base + 1 > self._limits.max_depth:
            raise self._too_deep(event.start_mark, None)
        before, outer_reach = self._nodes, self._reach
        if anchor is not None:
            self._reach = base
        self._depth = base + 1
        self._reach = max(self._reach, base + 1)
        try:
            if kind is SequenceStartEvent:
                node = self._compose_sequence(event, anchor)
            else:
                node = self._compose_mapping(event, anchor)
        finally:
            self._depth = base
        if anchor is not None:
            self._done[id(node)] = (self._nodes - before + 1, self._reach - base)
            self._reach = max(outer_reach, self._reach)
        return node

    def _compose_alias(self, event: Any) -> yaml.Node:
        self.get_event()
        anchor = event.anchor
        target = self.anchors.get(anchor)
        if target is None:
            raise ComposerError(None, None, f"found undefined alias {anchor!r}", event.start_mark)
        done = self._done.get(id(target))
        if done is None:
            raise _LimitExceeded(
                f"alias *{anchor} is used inside its own anchor &{anchor} "
                f"(line {target.start_mark.line + 1}): recursive aliases are not allowed",
                event.start_mark,
            )
        nodes, height = done
        self._nodes += nodes
        if self._nodes > self._limits.max_nodes:
            raise self._too_many(event.start_mark, anchor)
        if self._depth + height > self._limits.max_depth:
            raise self._too_deep(event.start_mark, anchor)
        self._reach = max(self._reach, self._depth + height)
        node: yaml.Node = target
        return node

    def _compose_sequence(self, start: Any, anchor: str | None) -> yaml.Node:
        self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(SequenceNode, None, start.implicit)
        node = SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        items = node.value
        index = 0
        while not self.check_event(SequenceEndEvent):
            items.append(self.compose_node(node, index))
            index += 1
        node.end_mark = self.get_event().end_mark
        return node

    def _compose_mapping(self, start: Any, anchor: str | None) -> yaml.Node:
        self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(MappingNode, None, start.implicit)
        node = MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        pairs = node.value
        seen: dict[str, int] = {}
        while not self.check_event(MappingEndEvent):
            key = self.compose_node(node, None)
            value = self.compose_node(node, key)
            pairs.append((key, value))
            if type(key) is ScalarNode:
                text, line = str(key.value), key.start_mark.line + 1
                if text in seen:
                    self.repeated_keys.append((line, text, seen[text]))
                seen[text] = line
        node.end_mark = self.get_event().end_mark
        return node


class _SafeConstructor(SafeConstructor):
    """SafeConstructor whose value errors (a 5,000-digit integer, 2024-02-30) are located."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as exc:
            reason = str(exc).split(";")[0]  # not Python's advice on sys.set_int_max_str_digits
            raise ConstructorError(
                None, None, f"cannot read this value: {reason}", node.start_mark
            ) from None


class _PyLoader(Reader, Scanner, Parser, _BoundedComposer, _SafeConstructor, Resolver):
    """PyYAML's pure-Python reader, scanner and parser (where libyaml is missing)."""

    def __init__(self, text: str, limits: YamlLimits) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._init_limits(limits)


def _new_loader(text: str, limits: YamlLimits) -> Any:
    """A loader that composes with ``_BoundedComposer``: libyaml's parser when there is one
    (several times faster), else PyYAML's."""
    if _CLoader is not None:
        return _CLoader(text, limits)
    return _PyLoader(text, limits)


_CLoader: type | None = None
if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser

    class _CLoaderClass(_BoundedComposer, CParser, _SafeConstructor, Resolver):
        """libyaml scans and parses; composing (and so the counting) stays in Python."""

        def __init__(self, text: str, limits: YamlLimits) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            _SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._init_limits(limits)

    _CLoader = _CLoaderClass


@contextmanager
def _no_gc() -> Iterator[None]:
    """Building ~100,000 small objects wakes the cyclic collector again and again (seconds, on
    a busy host), and none of them is garbage yet: it may wait until the document is built."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _read_bounded(path: Path, name: str, limits: YamlLimits) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise ValidationFailed([Problem(name, None, None, "no such file")]) from None
    except IsADirectoryError:
        raise ValidationFailed([Problem(name, None, None, "a folder, not a file")]) from None
    except OSError as exc:
        raise ValidationFailed([Problem(name, None, None, f"cannot read: {exc}")]) from None
    if len(raw) > limits.max_bytes:
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        shown = f"{size:,} bytes" if size > limits.max_bytes else "larger"
        raise ValidationFailed(
            [
                Problem(
                    name,
                    None,
                    None,
                    f"the file is {shown}; the limit is {limits.max_bytes:,} bytes "
                    f"({limits.max_bytes / 1024 / 1024:g} MiB)",
                )
            ]
        )
    return raw


def _line_at(text: str | bytes, position: int | None) -> int | None:
    if position is None or position < 0:
        return None
    if isinstance(text, bytes):
        return text.count(b"\n", 0, position) + 1
    return text.count("\n", 0, position) + 1


def read_yaml(
    path: Path, limits: YamlLimits = DEFAULT_LIMITS, *, allow_empty: bool = False
) -> YamlDocument:
    """Read one YAML document within ``limits``; syntax errors, duplicate keys and limits
    exceeded become located problems. An empty file (or one of comments only) is a problem,
    unless ``allow_empty``: then its data is None (a settings file not filled in yet)."""
    name = str(path)
    raw = _read_bounded(path, name, limits)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValidationFailed([Problem(name, line, None, f"not UTF-8 text: {exc}")]) from None
    with _no_gc():
        lines, data = _compose_and_construct(raw, text, name, limits, allow_empty)
    return YamlDocument(name, raw, data, lines)


def _compose_and_construct(
    raw: bytes, text: str, name: str, limits: YamlLimits, allow_empty: bool = False
) -> tuple[LineIndex, Any]:
    def fail(line: int | None, message: str) -> ValidationFailed:
        return ValidationFailed([Problem(name, line, None, message)])

    loader: Any = None
    try:
        loader = _new_loader(text, limits)
        node = loader.get_single_node()
        if node is None:
            if allow_empty:
                return LineIndex(MappingNode("tag:yaml.org,2002:map", [])), None
            raise fail(1, "the file is empty")
        lines = _lines_of(node, name, loader.repeated_keys)
        data = loader.construct_document(node)
    except _LimitExceeded as exc:
        raise fail(exc.line, exc.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = str(exc.problem or exc.context)
        if "maximum nesting depth" in problem:  # libyaml's own limit (1,000), beyond ours
            problem = f"nested more than {limits.max_depth} levels deep, the limit"
        else:
            problem = f"invalid YAML: {problem}"
        raise fail(line, problem) from None
    except ReaderError as exc:  # libyaml counts bytes, PyYAML characters
        where = raw if _CLoader is not None else text
        raise fail(_line_at(where, exc.position), f"invalid YAML: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise fail(None, f"invalid YAML: {exc}") from None
    except RecursionError:  # the limits should make this impossible; never a traceback
        raise fail(None, "invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return lines, data


def _lines_of(node: yaml.Node, name: str, repeated: list[tuple[int, str, int]]) -> LineIndex:
    if repeated:
        raise ValidationFailed(
            capped(
                [
                    Problem(name, line, None, f"key {key!r} repeats the one on line {first}")
                    for line, key, first in repeated
                ]
            )
        )
    return LineIndex(node)


class LineIndex:
    """The line of each key path (``("steps", 0, "with", "x")``), found in the composed nodes
    when asked: a key's line, an item's first line. Only the problems' paths are looked up,
    so a large document is not indexed in full."""

    def __init__(self, root: yaml.Node) -> None:
        self._root = root
        self._keys: dict[int, dict[str, tuple[int, yaml.Node]]] = {}

    def _step(self, node: yaml.Node, part: str | int) -> tuple[int, yaml.Node] | None:
        if isinstance(node, MappingNode):
            keys = self._keys.get(id(node))
            if keys is None:
                keys = {}
                for key, value in node.value:
                    if isinstance(key, ScalarNode):
                        keys[str(key.value)] = (key.start_mark.line + 1, value)
                self._keys[id(node)] = keys
            return keys.get(str(part))
        if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            item = node.value[part]
            return item.start_mark.line + 1, item
        return None

    def get(self, loc: Loc, default: int | None = None) -> int | None:
        line, depth = self._walk(loc)
        return line if depth == len(loc) else default

    def nearest(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest ancestor that is in the document."""
        return self._walk(loc)[0]

    def _walk(self, loc: Loc) -> tuple[int, int]:
        node, line = self._root, self._root.start_mark.line + 1
        for depth, part in enumerate(loc):
            found = self._step(node, part)
            if found is None:
                return line, depth
            line, node = found
        return line, len(loc)

    def __contains__(self, loc: object) -> bool:
        return isinstance(loc, tuple) and self.get(loc) is not None

    def __getitem__(self, loc: Loc) -> int:
        line = self.get(loc)
        if line is None:
            raise KeyError(loc)
        return line


def capped(problems: list[Problem], limit: int = MAX_PROBLEMS) -> list[Problem]:
    """At most ``limit`` problems per file, and a last one that counts the rest."""
    if len(problems) <= limit:
        return problems
    shown = problems[:limit]
    counts: dict[str, int] = {}
    for problem in problems[limit:]:
        counts[problem.file] = counts.get(problem.file, 0) + 1
    for file, count in counts.items():
        shown.append(Problem(file, None, None, f"{count} more problem(s) not shown"))
    return shown


def model_problems(doc: YamlDocument, exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
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
    return capped(problems)


def parse_model(doc: YamlDocument, model: type[M], what: str) -> M:
    if not isinstance(doc.data, dict):
        raise ValidationFailed([doc.problem((), f"a {what} must be a mapping of keys")])
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        raise ValidationFailed(model_problems(doc, exc)) from None
    except RecursionError:  # the depth limit should make this impossible; never a traceback
        raise ValidationFailed([doc.problem((), f"the {what} is nested too deeply")]) from None
