"""Helpers for the record-store and report tests (this module holds no tests).

Records are made by the real runner (``drills.engine.runner.Runner``, no Prefect) on an
environment of one local node with no database: shell steps on 127.0.0.1, nothing else. Each
helper takes the DRCTL_HOME it works in, so tests never touch the session's home or its lab.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml

from drills.model.record import Record


def make_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="drctl-rec-test-", dir="/tmp"))
    home.chmod(0o755)
    return home


@contextmanager
def home_env(home: Path, **extra: str) -> Iterator[Path]:
    """DRCTL_HOME (and any extra variables) set for in-process code, restored afterwards."""
    saved = {k: os.environ.get(k) for k in ("DRCTL_HOME", "DRCTL_RECORDS_URL", *extra)}
    os.environ["DRCTL_HOME"] = str(home)
    os.environ.pop("DRCTL_RECORDS_URL", None)
    os.environ.update(extra)
    try:
        yield home
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def environment_file(
    directory: Path, name: str = "rec", *, password_env: str | None = None
) -> Path:
    nodes: dict[str, Any] = {
        "app1": {"role": "local", "host": "127.0.0.1", "executor": "local"},
    }
    if password_env:
        # A database node the playbook does not use; its password is named, never written.
        nodes["vault1"] = {
            "role": "vault",
            "host": "127.0.0.1",
            "port": 9,
            "postgres": {
                "data_dir": "/nonexistent",
                "bin_dir": "/nonexistent",
                "password_env": password_env,
            },
        }
    path = directory / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump({"name": name, "protected": False, "nodes": nodes}), encoding="utf-8"
    )
    return path


def shell(step_id: str, script: str, **more: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "title": {"en": f"Step {step_id}", "zh": f"步骤 {step_id}"},
        "action": "shell",
        "target": "local",
        "with": {"command": ["sh", "-c", script]},
        **more,
    }


def playbook_file(
    directory: Path,
    name: str,
    steps: list[dict[str, Any]],
    *,
    rollback: list[dict[str, Any]] | None = None,
    objectives: dict[str, Any] | None = None,
    kind: str = "switchover",
) -> Path:
    body: dict[str, Any] = {
        "name": name,
        "version": 1,
        "kind": kind,
        "title": {"en": f"Drill {name}", "zh": f"演练 {name}"},
        "description": f"The {name} drill of the record tests.",
        "roles": ["local"],
        "objectives": objectives
        or {"rto": {"target": "30s", "from": "run_started", "to": "service_restored"}},
        "steps": steps,
    }
    if rollback:
        body["rollback"] = rollback
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def run(playbook: Path, environment: Path, **request: Any) -> Record:
    from drills.engine.runner import Runner, RunRequest

    return Runner(RunRequest(playbook=str(playbook), environment=str(environment), **request)).run()


PASSED_STEPS = [
    shell("prepare", "echo preparing"),
    shell(
        "switch",
        "echo '<script>alert(\"host\")</script> switched'",
        milestone="service_restored",
    ),
]


def outcome_records(home: Path) -> dict[str, Record]:
    """A passed, a failed, a rolled-back and an interrupted record, made by the real runner and
    sealed (the interrupted one as ``drctl unlock`` seals it: ``seal_interrupted``)."""
    from drills.engine.runner import Runner, RunRequest

    env = environment_file(home)
    records: dict[str, Record] = {}
    records["passed"] = run(playbook_file(home, "passing", PASSED_STEPS), env)
    records["failed"] = run(
        playbook_file(
            home,
            "failing",
            [
                shell("check_app", "echo 'app answers 503' >&2; exit 3", on_failure="continue"),
                shell("switch", "echo switched", milestone="service_restored"),
            ],
        ),
        env,
    )
    records["rolled_back"] = run(
        playbook_file(
            home,
            "rolling",
            [
                shell("stop_app", "echo stopped"),
                shell("promote", "echo promote failed >&2; exit 1", on_failure="rollback"),
                shell("never", "echo never", milestone="service_restored"),
            ],
            rollback=[shell("start_app", "echo started again", undoes="stop_app")],
        ),
        env,
    )

    def interrupt_at_second(step_id: str, fn: Any) -> Any:
        if step_id == "second":
            raise KeyboardInterrupt
        return fn()

    runner = Runner(
        RunRequest(
            playbook=str(
                playbook_file(
                    home,
                    "interrupted",
                    [
                        shell("first", "echo first"),
                        shell("second", "echo 2", milestone="service_restored"),
                    ],
                )
            ),
            environment=str(env),
        ),
        invoke=interrupt_at_second,
    )
    with suppress(KeyboardInterrupt):
        runner.run()
    records["interrupted"] = seal_interrupted(home, runner.run_id)
    return records


def seal_interrupted(home: Path, run_id: str) -> Record:
    """What a person does after an interrupted run they will neither resume nor abort: they
    check the environment and ``drctl unlock`` it, which releases the lock the run kept and
    seals its record (``interrupted``). Until then the record is pending, in its journal."""
    from drills.records.lock import force_unlock
    from drills.records.store import RecordStore

    store = RecordStore(home / "records", home / "locks")
    pending = store.load(run_id)
    assert pending.status == "interrupted" and store.backend.get(run_id) is None
    holder = force_unlock(home / "locks", str(pending.environment["name"]))
    assert holder is not None and holder.run_id == run_id  # the run kept its lock
    assert store.seal_pending(str(pending.environment["name"])) == [run_id]
    return store.load(run_id)
