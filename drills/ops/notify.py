"""Notifications: who hears about a drill while it runs, through apprise.

Events: a drill started; an approval is needed; a step failed; an objective was missed; the drill
finished (with where its report is). Channels are apprise URLs:

=====================================  ===========================================
``wecombot://BOTKEY``                  WeCom (企业微信) group robot
``dingtalk://TOKEN/``                  DingTalk group robot (``dingtalk://SECRET@TOKEN/`` signed)
``mailtos://USER:PASS@smtp.host?to=A`` e-mail
``json://HOST:PORT/PATH``              generic webhook: POST {version, title, message, type}
=====================================  ===========================================

They come from ``DRCTL_NOTIFY`` (apprise URLs, separated by spaces or newlines), or else from
``$DRCTL_HOME/notify.yaml`` (or the file ``DRCTL_NOTIFY_FILE`` names)::

    urls:
      - wecombot://${HIS_WECOM_KEY}     # ${NAME} is read from the environment
    events: [started, approval_needed, step_failed, objective_missed, finished]
    report_url: https://dr.example.org/reports/{run_id}.html   # optional link
    wait: 10s                           # how long the end of a run waits for deliveries

Hearing about a drill must never change it: messages go out from a background thread, so a slow
or dead channel cannot stretch a step or an objective, and a failed delivery is logged, never
raised. Only the end of a run waits (at most ``wait``) so that the last message leaves before the
process does.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from drills.engine.listeners import Listener
from drills.home import drctl_home
from drills.model.durations import Duration, format_seconds
from drills.model.errors import InputError

if TYPE_CHECKING:
    from drills.engine.loader import LoadedPlaybook
    from drills.model.environment import Environment
    from drills.model.record import Record, StepRecord

log = logging.getLogger("drctl")

NOTIFY_ENV = "DRCTL_NOTIFY"
NOTIFY_FILE_ENV = "DRCTL_NOTIFY_FILE"
Level = Literal["info", "success", "warning", "failure"]


class Event(StrEnum):
    started = "started"
    approval_needed = "approval_needed"
    step_failed = "step_failed"
    objective_missed = "objective_missed"
    finished = "finished"


@dataclass(frozen=True)
class Message:
    event: Event
    title: str
    body: str
    level: Level


class NotifySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(min_length=1, description="apprise URLs of the channels.")
    events: list[Event] = Field(default_factory=lambda: list(Event))
    report_url: str | None = Field(
        default=None, description="Link to a run's report; {run_id} is replaced."
    )
    wait: Duration = Field(default=10.0, description="How long a run's end waits for delivery.")


class Channels(Protocol):
    def send(self, message: Message) -> bool: ...


def redact_url(url: str) -> str:
    """An apprise URL fit for a log line: scheme and host only (keys and passwords stay out)."""
    match = re.match(r"^([a-z0-9+.-]+)://(?:[^@/]*@)?([^/:?]*)", url, re.IGNORECASE)
    if not match:
        return "<unparsable URL>"
    scheme, host = match.groups()
    return f"{scheme}://{host if scheme in ('json', 'jsons', 'form', 'forms') else '…'}"


class AppriseChannels:
    """The configured channels, each an apprise URL."""

    def __init__(self, urls: list[str]) -> None:
        import apprise

        self.apprise = apprise.Apprise()
        for url in urls:
            if not self.apprise.add(url):
                raise InputError(
                    f"notification channel {redact_url(url)} is not an apprise URL it knows "
                    "(e.g. wecombot://KEY, dingtalk://TOKEN/, mailtos://..., json://host/path)"
                )

    def send(self, message: Message) -> bool:
        import apprise

        return bool(
            self.apprise.notify(
                body=message.body,
                title=message.title,
                notify_type=apprise.NotifyType(message.level),
            )
        )


def _expand(text: str, where: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise InputError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value, text)


def notify_file() -> Path:
    configured = os.environ.get(NOTIFY_FILE_ENV)
    return Path(configured).expanduser() if configured else drctl_home() / "notify.yaml"


def load_settings() -> NotifySettings | None:
    """The notification settings, or None when no channel is configured."""
    urls = os.environ.get(NOTIFY_ENV, "").split()
    if urls:
        return NotifySettings(urls=[_expand(u, NOTIFY_ENV) for u in urls])
    path = notify_file()
    if not path.is_file():
        return None
    from drills.engine.documents import parse_model, read_yaml

    settings = parse_model(read_yaml(path), NotifySettings, "notification settings")
    return settings.model_copy(
        update={"urls": [_expand(u, f"{path}: urls") for u in settings.urls]}
    )


def configured_notifier() -> Notifier | None:
    """A notifier for the configured channels; None when there are none.

    A broken configuration is logged and leaves the drill without notifications: it must not
    stop a drill (``drctl notify test`` reports it as an error).
    """
    try:
        settings = load_settings()
        if settings is None:
            return None
        return Notifier.from_settings(settings)
    except Exception as exc:
        log.error("notifications are off for this run: %s", exc)
        return None


# -- what is said --------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return format_seconds(value) if value is not None else "not measured"


class Notifier(Listener):
    """A listener that turns a run's events into messages, sent in the background."""

    def __init__(
        self,
        channels: Channels,
        *,
        events: list[Event] | None = None,
        report_url: str | None = None,
        wait: float = 10.0,
    ) -> None:
        self.channels = channels
        self.events = set(events if events is not None else list(Event))
        self.report_url = report_url
        self.wait = wait
        self.deliveries: list[tuple[Event, bool]] = []
        self._queue: queue.Queue[Message | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._run: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> Notifier:
        return cls(
            AppriseChannels(settings.urls),
            events=settings.events,
            report_url=settings.report_url,
            wait=settings.wait,
        )

    # -- delivery ----------------------------------------------------------------------------

    def post(self, message: Message) -> None:
        if message.event not in self.events:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._deliver, name="drctl-notify", daemon=True
                )
                self._thread.start()
            self._queue.put(message)

    def _deliver(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            try:
                ok = self.channels.send(message)
            except Exception:
                log.exception("notification %s could not be sent", message.event.value)
                ok = False
            else:
                if not ok:
                    log.warning("notification %s was not delivered", message.event.value)
            self.deliveries.append((message.event, ok))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message posted so far was sent (or failed); False on timeout."""
        with self._lock:
            thread = self._thread
            self._thread = None
            if thread is None:
                return True
            self._queue.put(None)
        thread.join(self.wait if timeout is None else timeout)
        if thread.is_alive():
            log.warning("notifications still being sent after %gs; not waiting longer", self.wait)
            return False
        return True

    # -- events --------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self._run.get('playbook', '?')} on {self._run.get('environment', '?')}"

    def started(self, run_id: str, loaded: LoadedPlaybook, env: Environment) -> None:
        pb = loaded.playbook
        self._run = {"run_id": run_id, "playbook": pb.name, "environment": env.name}
        protected = " (protected)" if env.protected else ""
        self.post(
            Message(
                Event.started,
                f"[drctl] 演练开始 drill started: {self._where()}",
                "\n".join(
                    [
                        f"{pb.title.zh} / {pb.title.en}",
                        f"run: {run_id}",
                        f"environment: {env.name}{protected}",
                    ]
                ),
                "info",
            )
        )

    def approval_needed(self, run_id: str, environment: str, playbook: str) -> None:
        """A real run on a protected environment waits for someone to approve it."""
        self.post(
            Message(
                Event.approval_needed,
                f"[drctl] 需要审批 approval needed: {playbook} on {environment}",
                "\n".join(
                    [
                        f"run: {run_id}",
                        f"a real run on protected environment {environment} waits for an "
                        "approval: resume its paused flow run in the Prefect UI with the form "
                        "(approver, ticket, the environment's name, reason)",
                    ]
                ),
                "warning",
            )
        )

    def step_ended(self, record: StepRecord) -> None:
        if record.status != "failed":
            return
        why = record.reason or record.error or "failed"
        phase = " (rollback)" if record.phase == "rollback" else ""
        self.post(
            Message(
                Event.step_failed,
                f"[drctl] 步骤失败 step failed: {record.id}{phase} — {self._where()}",
                "\n".join(
                    [
                        f"run: {self._run.get('run_id', '?')}",
                        f"step: {record.id}, {record.action} on {record.target} ({record.node})",
                        f"after {format_seconds(record.duration_seconds)}: {why}",
                    ]
                ),
                "failure",
            )
        )

    def finished(self, record: Record) -> None:
        try:
            where = f"{record.playbook.get('name', '?')} on {record.environment.get('name', '?')}"
            missed = [o for o in record.objectives if not o.met]
            if missed:
                lines = [f"run: {record.id}"]
                for o in missed:
                    measured = _seconds(o.measured_seconds)
                    note = f" ({o.note})" if o.note else ""
                    lines.append(
                        f"{o.name}: {measured} against a target of "
                        f"{format_seconds(o.target_seconds)}{note}"
                    )
                self.post(
                    Message(
                        Event.objective_missed,
                        f"[drctl] 目标未达成 objective missed: "
                        f"{', '.join(o.name for o in missed)} — {where}",
                        "\n".join(lines),
                        "warning",
                    )
                )
            met = sum(o.met for o in record.objectives)
            lines = [
                f"run: {record.id}",
                f"{record.status}: {record.reason}",
                f"took {format_seconds(record.duration_seconds)}; objectives met "
                f"{met}/{len(record.objectives)}",
                *self.report_links(record),
            ]
            self.post(
                Message(
                    Event.finished,
                    f"[drctl] 演练结束 drill {record.status}: {where}",
                    "\n".join(lines),
                    "success" if record.status == "passed" else "failure",
                )
            )
        finally:
            self.flush()

    def report_links(self, record: Record) -> list[str]:
        links = []
        if self.report_url:
            links.append(f"report: {self.report_url.replace('{run_id}', record.id)}")
        links.append(f"report: drctl report {record.id}")
        flow_run = record.orchestrator.get("prefect_flow_run_id")
        ui = _prefect_ui_url() if record.orchestrator.get("prefect_api") != "ephemeral" else None
        if flow_run and ui:
            links.append(f"Prefect: {ui.rstrip('/')}/runs/flow-run/{flow_run}")
        return links


def _prefect_ui_url() -> str | None:
    try:
        from prefect.settings import PREFECT_UI_URL

        value: Any = PREFECT_UI_URL.value()
    except Exception:
        return None
    return str(value) if value else None


def send_test(settings: NotifySettings, text: str) -> list[tuple[str, bool]]:
    """Send one test message to each channel on its own; which ones took it."""
    results = []
    for url in settings.urls:
        channels = AppriseChannels([url])
        ok = channels.send(Message(Event.finished, "[drctl] 测试 test", text, "info"))
        results.append((redact_url(url), ok))
    return results
