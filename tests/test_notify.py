"""Notifications through apprise, received by a real HTTP server on 127.0.0.1.

The drills here need no database: one local node, shell and wait steps. They run through the
runner directly, and once through the Prefect flow to show the flow wires the notifier in.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.engine.runner import Runner, RunRequest
from drills.model.record import Record
from drills.ops.notify import (
    NOTIFY_ENV,
    NOTIFY_FILE_ENV,
    AppriseChannels,
    Event,
    Message,
    Notifier,
    configured_notifier,
    load_settings,
)
from tests.helpers import drctl


class Receiver:
    """A webhook receiver: records each JSON POST; answers ``status`` after ``delay`` s."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay)
                receiver.received.append({"path": self.path, **json.loads(body)})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def titles(self) -> list[str]:
        return [str(m["title"]) for m in self.received]

    def wait_for(self, count: int, deadline: float = 10) -> None:
        end = time.monotonic() + deadline
        while len(self.received) < count and time.monotonic() < end:
            time.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        r.thread.join(5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def local_drill(tmp_path: Path) -> tuple[Path, Path]:
    """A playbook and environment that need no database: a step fails, an objective is missed."""
    env = tmp_path / "notify-env.yaml"
    env.write_text(
        yaml.safe_dump(
            {"name": "notify-env", "nodes": {"app1": {"role": "local", "host": "127.0.0.1"}}}
        )
    )
    playbook = tmp_path / "notify-test.yaml"
    playbook.write_text(
        yaml.safe_dump(
            {
                "name": "notify-test",
                "version": 1,
                "kind": "inspection",
                "title": {"en": "Notification test", "zh": "通知测试"},
                "roles": ["local"],
                "objectives": {"quick": {"target": "1ms", "from": "begun", "to": "done"}},
                "steps": [
                    {
                        "id": "begin",
                        "action": "shell",
                        "target": "local",
                        "with": {"command": "true"},
                        "milestone": "begun",
                    },
                    {
                        "id": "slow",
                        "action": "wait",
                        "target": "local",
                        "with": {"seconds": 0.05},
                        "milestone": "done",
                    },
                    {
                        "id": "broken",
                        "action": "shell",
                        "target": "local",
                        "with": {"command": "false"},
                        "on_failure": "continue",
                    },
                ],
            },
            allow_unicode=True,
        )
    )
    return playbook, env


def run_local(local_drill: tuple[Path, Path], *listeners: Any) -> Record:
    playbook, env = local_drill
    request = RunRequest(playbook=str(playbook), environment=str(env), operator="tester")
    return Runner(request, progress=list(listeners)).run()


def summary(record: Record) -> tuple[Any, ...]:
    return (
        record.status,
        [(s.id, s.status) for s in record.steps],
        [(o.name, o.met) for o in record.objectives],
    )


def test_a_drill_notifies_started_step_failed_objective_missed_finished(
    receiver: Receiver, local_drill: tuple[Path, Path]
) -> None:
    notifier = Notifier(AppriseChannels([receiver.url]), report_url="https://dr.test/r/{run_id}")
    record = run_local(local_drill, notifier)

    assert record.status == "failed"
    # finished() waited for the deliveries: everything is there when the run returns.
    assert notifier.deliveries == [
        (Event.started, True),
        (Event.step_failed, True),
        (Event.objective_missed, True),
        (Event.finished, True),
    ]
    started, failed, missed, finished = receiver.received
    assert all(m["path"] == "/hook" for m in receiver.received)
    assert started["title"] == "[drctl] 演练开始 drill started: notify-test on notify-env"
    assert started["type"] == "info" and f"run: {record.id}" in started["message"]
    assert failed["title"].startswith("[drctl] 步骤失败 step failed: broken — notify-test")
    assert failed["type"] == "failure" and "shell on local (app1)" in failed["message"]
    assert "action failed after 1 attempt(s)" in failed["message"]
    assert missed["title"].startswith("[drctl] 目标未达成 objective missed: quick")
    assert "against a target of 0.001s" in missed["message"]
    assert finished["title"] == "[drctl] 演练结束 drill failed: notify-test on notify-env"
    assert finished["type"] == "failure"
    assert f"report: https://dr.test/r/{record.id}" in finished["message"]
    assert f"report: drctl report {record.id}" in finished["message"]
    assert "objectives met 0/1" in finished["message"]


def test_approval_needed_is_sent(receiver: Receiver) -> None:
    notifier = Notifier(AppriseChannels([receiver.url]))
    notifier.approval_needed("RUN-1", "his-prod", "pg-failover")
    assert notifier.flush(10)
    [message] = receiver.received
    assert message["title"] == "[drctl] 需要审批 approval needed: pg-failover on his-prod"
    assert "RUN-1" in message["message"] and "protected environment his-prod" in message["message"]
    assert message["type"] == "warning"


def test_only_the_configured_events_are_sent(
    receiver: Receiver, local_drill: tuple[Path, Path]
) -> None:
    notifier = Notifier(AppriseChannels([receiver.url]), events=[Event.finished])
    run_local(local_drill, notifier)
    assert [t.split(":")[0] for t in receiver.titles()] == ["[drctl] 演练结束 drill failed"]


class Exploding:
    def send(self, message: Message) -> bool:
        raise RuntimeError("the channel exploded")


def test_a_failing_channel_never_changes_the_drill(
    receiver: Receiver, local_drill: tuple[Path, Path]
) -> None:
    baseline = summary(run_local(local_drill))

    dead = Notifier(AppriseChannels([f"json://127.0.0.1:{free_port()}/nobody"]))
    refused = run_local(local_drill, dead)
    assert summary(refused) == baseline
    assert [ok for _, ok in dead.deliveries] == [False] * 4

    receiver.status = 500
    erroring = Notifier(AppriseChannels([receiver.url]))
    assert summary(run_local(local_drill, erroring)) == baseline
    assert len(receiver.received) == 4 and not any(ok for _, ok in erroring.deliveries)

    exploding = Notifier(Exploding())
    assert summary(run_local(local_drill, exploding)) == baseline
    assert [ok for _, ok in exploding.deliveries] == [False] * 4


def test_a_slow_channel_does_not_stretch_the_drill(
    receiver: Receiver, local_drill: tuple[Path, Path]
) -> None:
    began = time.monotonic()
    baseline = run_local(local_drill)
    alone = time.monotonic() - began

    receiver.delay = 2.0  # per message: sent in line, four messages would add 8 s
    notifier = Notifier(AppriseChannels([receiver.url]), wait=0.3)
    began = time.monotonic()
    record = run_local(local_drill, notifier)
    took = time.monotonic() - began
    # The end of the run waits 0.3 s for deliveries, then lets them go on in the background.
    assert took < alone + 1.5, (took, alone)
    assert summary(record) == summary(baseline)
    receiver.wait_for(1)
    assert receiver.titles()[0].startswith("[drctl] 演练开始 drill started")


def test_settings_from_the_environment_and_from_notify_yaml(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(NOTIFY_ENV, raising=False)
    monkeypatch.setenv(NOTIFY_FILE_ENV, str(tmp_path / "none.yaml"))
    assert load_settings() is None and configured_notifier() is None

    monkeypatch.setenv("TEST_HOOK_PORT", str(receiver.port))
    path = tmp_path / "notify.yaml"
    path.write_text(
        "urls: ['json://127.0.0.1:${TEST_HOOK_PORT}/from-file']\n"
        "events: [finished, approval_needed]\nwait: 5s\n"
    )
    monkeypatch.setenv(NOTIFY_FILE_ENV, str(path))
    settings = load_settings()
    assert settings is not None
    assert settings.urls == [f"json://127.0.0.1:{receiver.port}/from-file"]
    assert settings.events == [Event.finished, Event.approval_needed] and settings.wait == 5.0

    path.write_text("urls: ['json://127.0.0.1:${NOT_SET_ANYWHERE}/x']\n")
    assert configured_notifier() is None  # logged; a drill still runs
    path.write_text("urls: [x]\nevent: [finished]\n")
    with pytest.raises(Exception, match="unknown key 'event'"):
        load_settings()

    monkeypatch.setenv(NOTIFY_ENV, f"{receiver.url}  json://127.0.0.1:{receiver.port}/second")
    settings = load_settings()
    assert settings is not None and len(settings.urls) == 2


def test_notify_test_command(receiver: Receiver) -> None:
    result = drctl("notify", "test", "--message", "你好 hello", env={NOTIFY_ENV: receiver.url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "json://127.0.0.1: sent" in result.stdout
    assert receiver.received[0]["message"] == "你好 hello"

    dead = f"json://127.0.0.1:{free_port()}/x"
    result = drctl("notify", "test", env={NOTIFY_ENV: dead})
    assert result.returncode == 1 and "not delivered" in result.stdout

    result = drctl("notify", "test", env={NOTIFY_ENV: "nosuchscheme://abc"})
    assert result.returncode == 2 and "is not an apprise URL it knows" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.prefect
def test_the_drill_flow_sends_notifications(
    receiver: Receiver,
    local_drill: tuple[Path, Path],
    prefect_api: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.drill import run_drill

    monkeypatch.setenv(NOTIFY_ENV, receiver.url)
    playbook, env = local_drill
    run_id = run_drill(RunRequest(playbook=str(playbook), environment=str(env)))
    assert [t.split(":")[0] for t in receiver.titles()] == [
        "[drctl] 演练开始 drill started",
        "[drctl] 步骤失败 step failed",
        "[drctl] 目标未达成 objective missed",
        "[drctl] 演练结束 drill failed",
    ]
    assert run_id in receiver.received[-1]["message"]
