"""The runner's decisions, with a fake host and a fake database session passed in.

No PostgreSQL, no SSH: the runner takes its executors from a ``Connector`` and its actions and
checks from a ``Catalogue``, so each decision (failure policies, rollback order, the split-brain
refusal, preconditions asked again after an approval) is tested on its own against a small world
whose state the fake actions change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.engine import core
from drills.engine.catalogue import ActionResult, ActionSpec, Catalogue, Params, check_spec
from drills.engine.loader import load_playbook
from drills.engine.runner import Runner
from drills.engine.targets import Targets
from drills.executors.host import CommandResult, PosixHost
from drills.model.approval import Approval
from drills.model.check import Observation
from drills.model.environment import Environment, Node
from drills.model.errors import CommandFailed, ConnectionFailed
from drills.model.request import RunRequest
from drills.records.store import RecordStore


@dataclass
class World:
    """What the fake nodes are: 'primary', 'standby' or 'down', and every command run."""

    roles: dict[str, str]
    commands: list[tuple[str, str]] = field(default_factory=list)


class FakeSql:
    def __init__(self, world: World, name: str) -> None:
        self.world, self.host = world, name

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> list[tuple[Any, ...]]:
        return [(self.scalar(sql, params, timeout=timeout),)]

    def scalar(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        role = self.world.roles[self.host]
        if role == "down":
            raise ConnectionFailed("connection refused", host=self.host)
        if sql == "role":
            return role
        if sql == "promote":
            self.world.commands.append((self.host, "promote"))
            self.world.roles[self.host] = "primary"
            return True
        raise AssertionError(f"unexpected SQL {sql!r}")

    def close(self) -> None:
        pass


class FakeHost(PosixHost):
    def __init__(self, world: World, name: str) -> None:
        self.world, self.host = world, name

    @property
    def address(self) -> str:
        return f"fake:{self.host}"

    def describe(self, argv: Sequence[str], user: str | None = None) -> str:
        return " ".join(argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        timeout: float = 60.0,
        check: bool = True,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        input: str | None = None,
    ) -> CommandResult:
        command = " ".join(argv)
        self.world.commands.append((self.host, command))
        if command == "stop":
            self.world.roles[self.host] = "down"
        elif command == "start":
            self.world.roles[self.host] = "primary"
        elif command == "fail":
            raise CommandFailed("fail exited 1", returncode=1, host=self.host)
        return CommandResult(tuple(argv), 0, "", "", 0.0)


class FakeConnector:
    def __init__(self, world: World) -> None:
        self.world = world

    def host(self, name: str, node: Node) -> FakeHost:
        return FakeHost(self.world, name)

    def sql(self, name: str, node: Node) -> FakeSql:
        return FakeSql(self.world, name)

    def http(self, name: str, node: Node) -> Any:
        raise AssertionError("no HTTP in these tests")


class CommandParams(Params):
    command: str


def _command_run(
    targets: Targets, role: str, params: CommandParams, timeout: float
) -> ActionResult:
    targets.host(role).run([params.command])
    return ActionResult(params.command)


def _promote_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    targets.sql(role).scalar("promote")
    return ActionResult("promoted")


def _is_primary(probe: Any, role: str, params: Params) -> Observation:
    """The node is primary."""
    seen = probe.sql(role).scalar("role")
    return Observation(seen, "primary", seen == "primary")


def _observe_role(probe: Any, role: str) -> str:
    try:
        return str(probe.sql(role).scalar("role"))
    except ConnectionFailed:
        return "down"


def fake_catalogue() -> Catalogue:
    catalogue = Catalogue()
    core.register(catalogue)
    catalogue.add_actions(
        ActionSpec("fake.command", CommandParams, _command_run, lambda t, r, p: [], True, "cmd"),
        ActionSpec("fake.promote", Params, _promote_run, lambda t, r, p: [], True, "promote"),
    )
    catalogue.add_checks(check_spec("fake.is_primary", Params, _is_primary))
    catalogue.observe_roles_with("postgres", _observe_role)
    return catalogue


def environment(*, protected: bool = False) -> Environment:
    pg = {"data_dir": "/nowhere", "bin_dir": "/nowhere"}
    return Environment.model_validate(
        {
            "name": "fake",
            "protected": protected,
            "nodes": {
                "db1": {"role": "primary", "host": "127.0.0.2", "postgres": pg},
                "db2": {"role": "standby", "host": "127.0.0.3", "postgres": pg},
            },
        }
    )


def playbook(tmp_path: Path, steps: list[dict[str, Any]], **extra: Any) -> Path:
    body = {
        "name": "fake-drill",
        "version": 1,
        "kind": "switchover",
        "title": {"en": "Fake", "zh": "假"},
        "roles": ["primary", "standby"],
        "steps": steps,
        **extra,
    }
    path = tmp_path / "fake-drill.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def command(step_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "action": "fake.command",
        "target": "primary",
        "with": {"command": text},
        **extra,
    }


def run(
    tmp_path: Path,
    world: World,
    steps: list[dict[str, Any]],
    *,
    env: Environment | None = None,
    request: dict[str, Any] | None = None,
    **runner: Any,
) -> Any:
    catalogue = fake_catalogue()
    loaded = load_playbook(playbook(tmp_path, steps, **runner.pop("playbook", {})), catalogue)
    return Runner(
        RunRequest(playbook="fake-drill", environment="fake", **(request or {})),
        loaded=loaded,
        env=env or environment(),
        catalogue=catalogue,
        connector=FakeConnector(world),
        store=RecordStore(tmp_path / "records", tmp_path / "locks"),
        **runner,
    ).run()


def test_an_abort_policy_stops_the_run_and_runs_no_later_step(tmp_path: Path) -> None:
    world = World({"db1": "primary", "db2": "standby"})
    record = run(
        tmp_path, world, [command("one", "ok"), command("two", "fail"), command("three", "ok")]
    )
    assert record.status == "aborted"
    assert "step two failed" in record.reason and "later steps not run" in record.reason
    assert [s.id for s in record.steps] == ["one", "two"]
    assert ("db1", "ok") in world.commands and len(world.commands) == 2


def test_a_continue_policy_runs_the_rest_and_the_run_fails(tmp_path: Path) -> None:
    world = World({"db1": "primary", "db2": "standby"})
    steps = [command("one", "fail", on_failure="continue"), command("two", "ok")]
    record = run(tmp_path, world, steps)
    assert record.status == "failed"
    assert record.reason == "steps one failed; the others ran"
    assert [s.status for s in record.steps] == ["failed", "passed"]


def test_rollback_runs_in_reverse_and_only_for_steps_that_started(tmp_path: Path) -> None:
    world = World({"db1": "primary", "db2": "standby"})
    steps = [
        command("first", "a"),
        command("second", "b"),
        command("third", "fail", on_failure="rollback"),
        command("never", "z"),
    ]
    rollback = [
        command("undo_first", "undo-a", undoes="first"),
        command("undo_second", "undo-b", undoes="second"),
        command("undo_never", "undo-z", undoes="never"),
    ]
    record = run(tmp_path, world, steps, playbook={"rollback": rollback})
    assert record.status == "failed" and record.rolled_back
    ran = [c for _, c in world.commands]
    assert ran == ["a", "b", "fail", "undo-b", "undo-a"]
    assert [s.id for s in record.steps if s.phase == "rollback"] == ["undo_second", "undo_first"]


def test_two_primaries_are_a_split_brain_and_nothing_runs(tmp_path: Path) -> None:
    world = World({"db1": "primary", "db2": "primary"})
    record = run(tmp_path, world, [command("one", "stop")])
    assert record.status == "aborted"
    assert "split brain" in record.reason
    assert world.commands == []


def test_a_precondition_that_does_not_hold_changes_nothing(tmp_path: Path) -> None:
    world = World({"db1": "primary", "db2": "standby"})
    record = run(
        tmp_path,
        world,
        [command("one", "stop")],
        playbook={"preconditions": [{"check": "fake.is_primary", "target": "standby"}]},
    )
    assert record.status == "aborted"
    assert record.reason.startswith("precondition fake.is_primary on db2 did not hold")
    assert record.reason.endswith("nothing was changed")
    assert world.commands == []


def test_preconditions_are_asked_again_after_the_approval(tmp_path: Path) -> None:
    world = World({"db1": "primary", "db2": "standby"})
    asked: list[str] = []

    def approver(request: RunRequest, run_id: str) -> Approval:
        asked.append(run_id)
        world.roles["db1"] = "down"  # the world moved while the run waited
        return Approval(
            approver="李主任", ticket="CHG-1", environment_confirmation="fake", reason="drill"
        )

    record = run(
        tmp_path,
        world,
        [command("one", "stop")],
        env=environment(protected=True),
        request={"mode": "real", "ticket": "CHG-1"},
        approver=approver,
        playbook={"preconditions": [{"check": "fake.is_primary", "target": "primary"}]},
    )
    assert asked, "the approver was asked"
    assert record.status == "aborted"
    assert "precondition fake.is_primary on db1 did not hold" in record.reason
    assert world.commands == []


def test_an_approved_run_goes_on_when_the_preconditions_still_hold(tmp_path: Path) -> None:
    world = World({"db1": "primary", "db2": "standby"})

    def approver(request: RunRequest, run_id: str) -> Approval:
        return Approval(
            approver="李主任", ticket="CHG-1", environment_confirmation="fake", reason="drill"
        )

    steps = [
        command("stop_primary", "stop"),
        {
            "id": "promote",
            "action": "fake.promote",
            "target": "standby",
            "verify": [{"check": "fake.is_primary"}],
            "within": "1s",
        },
    ]
    record = run(
        tmp_path,
        world,
        steps,
        env=environment(protected=True),
        request={"mode": "real", "ticket": "CHG-1"},
        approver=approver,
        playbook={"preconditions": [{"check": "fake.is_primary", "target": "primary"}]},
    )
    assert record.status == "passed", record.reason
    assert world.roles == {"db1": "down", "db2": "primary"}
    assert record.roles == {"primary": "db1", "standby": "db2"}


@pytest.mark.parametrize("denied", ["wrong name", "denied"])
def test_a_bad_approval_refuses_and_changes_nothing(tmp_path: Path, denied: str) -> None:
    world = World({"db1": "primary", "db2": "standby"})

    def approver(request: RunRequest, run_id: str) -> Approval:
        return Approval(
            approver="李主任",
            ticket="CHG-1",
            environment_confirmation="not-fake" if denied == "wrong name" else "fake",
            reason="drill",
            approve=denied != "denied",
        )

    record = run(
        tmp_path,
        world,
        [command("one", "stop")],
        env=environment(protected=True),
        request={"mode": "real"},
        approver=approver,
    )
    assert record.status == "aborted"
    assert record.reason.endswith("nothing was changed")
    assert world.commands == []
