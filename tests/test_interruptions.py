"""Interruptions, resume and abort, with real ``drctl`` processes on the real labs.

A Ctrl-C (SIGINT to drctl's process group, as a terminal sends it) or a SIGTERM stops a run at
once while it waits and at the end of the step in progress otherwise; drctl exits 3 within 5 s
without a traceback, its record says where it stopped and what it left, and the environment's
lock stays until ``drctl resume`` or ``drctl abort`` (or ``drctl unlock``). Both paths are run:
without Prefect (no server configured) and as a Prefect flow (the session's Prefect API, and
Prefect's temporary API, which must die with drctl even on SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.model.errors import RefusedError
from drills.model.record import build_record
from drills.records.lock import EnvironmentLock, refusal
from drills.records.store import RecordStore
from tests.helpers import REPO, alive, drctl, wait_until
from tests.labs import AnyLab

pytestmark = [pytest.mark.lab]

STOP_WITHIN = 5.0  # seconds from the signal to drctl's exit


# -- helpers ---------------------------------------------------------------------------------


def env_copy(home: Path, tmp_path: Path, name: str, base: str = "lab") -> Path:
    """The lab's environment under another name: its own lock, the same servers."""
    data = yaml.safe_load((home / "environments" / f"{base}.yaml").read_text())
    data["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def write_playbook(tmp_path: Path, name: str, steps: list[dict[str, Any]], **more: Any) -> Path:
    body = {
        "name": name,
        "version": 1,
        "kind": "inspection",
        "title": {"en": name, "zh": "测"},
        "roles": ["primary", "standby"],
        "steps": steps,
        **more,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


def slow_playbook(tmp_path: Path) -> Path:
    return write_playbook(
        tmp_path,
        "slow",
        [
            {
                "id": "first",
                "action": "observe",
                "target": "primary",
                "verify": [{"check": "pg.is_primary"}],
            },
            {
                "id": "long",
                "action": "wait",
                "target": "primary",
                "with": {"seconds": 120},
                "timeout": "200s",
            },
            {"id": "after", "action": "observe", "target": "primary"},
        ],
    )


def held_switchover(tmp_path: Path, after: str, seconds: float) -> Path:
    """The shipped switchover with a wait step ``hold`` after step ``after``: a place where a
    run is interrupted between two of its real steps."""
    data = yaml.safe_load((REPO / "playbooks" / "pg-switchover.yaml").read_text())
    data["name"] = f"held-after-{after.replace('_', '-')}"
    ids = [s["id"] for s in data["steps"]]
    hold = {
        "id": "hold",
        "action": "wait",
        "target": "standby",
        "with": {"seconds": seconds},
        "timeout": "300s",
    }
    data["steps"].insert(ids.index(after) + 1, hold)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def process_env(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PYTHONFAULTHANDLER"] = "1"  # a drctl that hangs is shown, not only killed
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """A real drctl, in a process group of its own (as a terminal's foreground job)."""
    exe = Path(sys.executable).parent / "drctl"
    return subprocess.Popen(
        [str(exe), *args],
        env=env,
        cwd=REPO,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def events_of(path: Path) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            found.append(json.loads(line))
    return found


def wait_for_step(
    home: Path, before: set[Path], step: str, proc: subprocess.Popen[str], deadline: float = 120
) -> Path:
    """The journal of the run that started after ``before``, once step ``step`` has begun."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for path in set((home / "records").glob("*.journal.jsonl")) - before:
            if any(
                e.get("event") == "step_started" and e.get("step") == step for e in events_of(path)
            ):
                return path
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"drctl ended (exit {proc.returncode}) first:\n{out}\n{err}")
        time.sleep(0.05)
    raise AssertionError(f"no run began step {step} within {deadline:g}s")


def journals(home: Path) -> set[Path]:
    return set((home / "records").glob("*.journal.jsonl"))


def stop(proc: subprocess.Popen[str], how: str) -> tuple[float, str, str]:
    """Send ``how`` (ctrl-c: SIGINT to the process group, as a terminal does; sigterm: to drctl
    alone) and wait: seconds to the exit, stdout, stderr."""
    sent = time.monotonic()
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack on stderr
        out, err = proc.communicate()
        raise AssertionError(f"drctl did not stop within 60s after {how}:\n{out}\n{err}") from None
    return time.monotonic() - sent, out, err


def show(run_id: str) -> dict[str, Any]:
    shown = drctl("records", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    record: dict[str, Any] = json.loads(shown.stdout)
    return record


def lock_text(home: Path, environment: str) -> str:
    path = home / "locks" / f"{environment}.lock"
    return path.read_text() if path.exists() else ""


def server_children(pid: int) -> list[int]:
    """Prefect API servers (uvicorn) that ``pid`` started."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid and b"prefect.server.api.server:create_app" in cmdline:
            found.append(int(entry))
    return found


@pytest.fixture
def no_leftover_lock(home: Path) -> Iterator[list[str]]:
    """Environments a test locks; unlocked after it whatever happened (the lab is shared)."""
    names: list[str] = []
    yield names
    for name in names:
        drctl("unlock", name)


def assert_refused_fast(playbook: Path, env: Path, run_id: str, **environ: str | None) -> None:
    """A second run on the environment is refused at once, naming the holder."""
    began = time.monotonic()
    again = subprocess.run(
        [str(Path(sys.executable).parent / "drctl"), "run", str(playbook), "--env", str(env)],
        env=process_env(**environ),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    took = time.monotonic() - began
    assert again.returncode == 3, again.stdout + again.stderr
    assert run_id in again.stderr and f"drctl resume {run_id}" in again.stderr
    assert "Traceback" not in again.stderr + again.stdout
    # The whole command (a new Python included), on a 2-CPU machine that runs other tests.
    assert took < 2.5, f"refused after {took:.2f}s"


# -- locks, without a lab ----------------------------------------------------------------------


def test_an_interrupted_run_keeps_its_lock_for_resume_only(tmp_path: Path) -> None:
    lock = EnvironmentLock(tmp_path, "env")
    lock.acquire("R1", 0.0)
    assert refusal(tmp_path, "env") is not None and "in use by run R1" in str(
        refusal(tmp_path, "env")
    )
    lock.keep("stopped by SIGTERM while step long waited")
    kept = refusal(tmp_path, "env")
    assert kept is not None and "drctl resume R1" in kept and "while step long waited" in kept
    with pytest.raises(RefusedError, match="drctl abort R1"):
        EnvironmentLock(tmp_path, "env").acquire("R2", 0.0)
    with pytest.raises(RefusedError, match="left by run R1"):
        EnvironmentLock(tmp_path, "env").take_over("R2", 0.0)
    before = (tmp_path / "env.lock").read_text()
    again = EnvironmentLock(tmp_path, "env")
    assert again.take_over("R1", 0.0).note == "stopped by SIGTERM while step long waited"
    assert refusal(tmp_path, "env") is not None and "in use by run R1" in str(
        refusal(tmp_path, "env")
    )
    again.give_back()  # a resume that refused: nothing changed
    assert (tmp_path / "env.lock").read_text() == before
    took_over = EnvironmentLock(tmp_path, "env")
    took_over.take_over("R1", 0.0)
    took_over.release()
    assert refusal(tmp_path, "env") is None
    with pytest.raises(RefusedError, match="drctl unlock"):
        EnvironmentLock(tmp_path, "env").take_over("R1", 0.0)


def test_resume_and_abort_are_refused_without_room_for_the_record(tmp_path: Path) -> None:
    """As a run is: a records directory without room for the journal and the record refuses
    ``drctl resume`` and ``drctl abort`` (exit 3) before anything changes: the journal and
    the kept lock stay as the interrupted run left them. With room, abort seals it."""
    from drills.records.room import MIN_FREE_ENV
    from tests.test_records_support import (
        environment_file,
        home_env,
        make_home,
        playbook_file,
        shell,
    )

    home = make_home()
    try:
        with home_env(home):
            from drills.engine.runner import Runner, RunRequest

            def stop_at_second(step_id: str, fn: Any) -> Any:
                if step_id == "second":
                    raise KeyboardInterrupt
                return fn()

            playbook = playbook_file(
                home,
                "roomless",
                [
                    # each may be rolled back: abort can undo them
                    shell("first", "echo 1", on_failure="rollback"),
                    shell("second", "echo 2", on_failure="rollback", milestone="service_restored"),
                ],
            )
            runner = Runner(
                RunRequest(playbook=str(playbook), environment=str(environment_file(home))),
                invoke=stop_at_second,
            )
            with pytest.raises(KeyboardInterrupt):
                runner.run()
        run_id = runner.run_id
        journal = home / "records" / f"{run_id}.journal.jsonl"
        journal_before, lock_before = journal.read_bytes(), lock_text(home, "rec")
        assert run_id in lock_before
        for how in ("resume", "abort"):
            refused = drctl(how, run_id, home=home, env={MIN_FREE_ENV: "4096G"})
            assert refused.returncode == 3, refused.stdout + refused.stderr
            assert "Traceback" not in refused.stdout + refused.stderr
            said = " ".join(refused.stderr.split())
            assert f"the records directory {home / 'records'} has" in said
            assert "the run was refused and nothing was changed" in said
            assert journal.read_bytes() == journal_before
            assert lock_text(home, "rec") == lock_before
        aborted = drctl("abort", run_id, home=home)
        assert aborted.returncode == 0, aborted.stdout + aborted.stderr
        assert lock_text(home, "rec") == ""
        with home_env(home):
            sealed = RecordStore(home / "records", home / "locks").sealed(run_id).record
        assert sealed.status == "aborted" and sealed.resumptions[-1]["how"] == "abort"
    finally:
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def test_the_record_shows_the_interruption_and_the_resumption() -> None:
    head = {
        "event": "run_started",
        "at": "2026-12-01T00:00:00.000Z",
        "offset": 0.0,
        "run_id": "r",
        "mode": "drill",
        "playbook": {"name": "p"},
        "environment": {"name": "e"},
        "objectives": {},
    }
    interrupted = {"event": "interrupted", "at": "a", "offset": 1.0, "signal": "SIGTERM"}
    ended = {"event": "run_ended", "at": "b", "offset": 1.1, "status": "interrupted", "reason": "x"}
    resumed = {"event": "run_resumed", "at": "c", "offset": 9.0, "how": "resume", "by": "me"}
    record = build_record([head, {"event": "step_started", "step": "s"}, interrupted, ended])
    assert record.status == "interrupted" and record.interruptions[0]["signal"] == "SIGTERM"
    going = build_record([head, interrupted, ended, resumed])
    assert going.status == "interrupted"  # resumed, then killed: no end of its own
    assert going.resumptions == [{"at": "c", "offset": 9.0, "how": "resume", "by": "me"}]
    killed = build_record([head, {"event": "step_started", "step": "promote", "at": "d"}])
    assert "during step promote, whose outcome is unknown" in killed.reason


# -- a run that waits stops at once ------------------------------------------------------------


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
@pytest.mark.parametrize("path", ["direct", "prefect"])
def test_a_waiting_run_stops_at_once_and_keeps_the_lock(
    lab: Path,
    tmp_path: Path,
    how: str,
    path: str,
    request: pytest.FixtureRequest,
    no_leftover_lock: list[str],
) -> None:
    name = f"lab-stop-{how}-{path}"
    env = env_copy(lab, tmp_path, name)
    no_leftover_lock.append(name)
    playbook = slow_playbook(tmp_path)
    api = request.getfixturevalue("prefect_api") if path == "prefect" else None
    environ = process_env(PREFECT_API_URL=api)
    before = journals(lab)
    proc = start("run", str(playbook), "--env", str(env), env=environ)
    journal = wait_for_step(lab, before, "long", proc)
    took, out, err = stop(proc, how)

    assert proc.returncode == 3, out + err
    assert took < STOP_WITHIN, f"drctl took {took:.2f}s to stop"
    assert "Traceback" not in out + err
    run_id = journal.name.split(".")[0]
    record = show(run_id)
    signal_name = "SIGINT (Ctrl-C)" if how == "ctrl-c" else "SIGTERM"
    assert record["status"] == "interrupted"
    assert record["reason"].startswith(f"stopped by {signal_name} while step long waited")
    assert [s["id"] for s in record["steps"]] == ["first"]
    interruption = record["interruptions"][-1]
    assert interruption["signal"] == signal_name and interruption["step"] == "long"
    assert interruption["last_finished"] == "first"
    observed = interruption["state"]["observed"]
    assert sorted(r for n, r in observed.items() if n != "app") == ["primary", "standby"]
    assert interruption["state"]["down"] == [] and interruption["state"]["unfilled"] == []
    commands = [c["command"] for c in interruption["next"]]
    assert commands == [f"drctl resume {run_id}", f"drctl abort {run_id}", f"drctl unlock {name}"]
    assert f"next: drctl resume {run_id}" in out  # the terminal says it too
    if path == "prefect":
        assert record["orchestrator"]["watched_by"] == "prefect"
    # The lock stays, naming the run: the next drill is refused at once, before Prefect.
    assert run_id in lock_text(lab, name)
    assert_refused_fast(playbook, env, run_id, PREFECT_API_URL=api)

    aborted = drctl("abort", run_id)
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    sealed = RecordStore(lab / "records", lab / "locks").sealed(run_id).record
    assert sealed.status == "aborted" and "nothing to roll back" in sealed.reason
    assert [r["how"] for r in sealed.resumptions] == ["abort"]
    assert lock_text(lab, name) == ""


def test_a_step_that_changes_something_is_finished_before_the_run_stops(
    lab: Path, tmp_path: Path, no_leftover_lock: list[str]
) -> None:
    env = env_copy(lab, tmp_path, "lab-stop-busy")
    no_leftover_lock.append("lab-stop-busy")
    marker = tmp_path / "busy-done"
    playbook = write_playbook(
        tmp_path,
        "busy",
        [
            {"id": "first", "action": "observe", "target": "primary"},
            {
                "id": "busy",
                "action": "shell",
                "target": "primary",
                "with": {"command": ["sh", "-c", f"sleep 1.5; echo done > {marker}"]},
            },
            {"id": "after", "action": "observe", "target": "primary"},
        ],
    )
    before = journals(lab)
    proc = start("run", str(playbook), "--env", str(env), env=process_env())
    journal = wait_for_step(lab, before, "busy", proc)
    took, out, err = stop(proc, "ctrl-c")  # the terminal's SIGINT does not reach the command

    assert proc.returncode == 3 and took < STOP_WITHIN, out + err
    assert "Traceback" not in out + err
    assert marker.read_text() == "done\n", "the step was cut in the middle"
    record = show(journal.name.split(".")[0])
    assert [(s["id"], s["status"]) for s in record["steps"]] == [
        ("first", "passed"),
        ("busy", "passed"),
    ]
    assert "after step busy, before step after" in record["reason"]


def test_a_second_ctrl_c_stops_harder_without_a_traceback(
    lab: Path, tmp_path: Path, no_leftover_lock: list[str]
) -> None:
    env = env_copy(lab, tmp_path, "lab-stop-hard")
    no_leftover_lock.append("lab-stop-hard")
    # A sleep no other process has, in a shell with a setsid grandchild: the command's three
    # processes, the grandchild outside its process group and session.
    token = f"20.{os.getpid():07d}{time.time_ns() % 10**6:06d}"
    playbook = write_playbook(
        tmp_path,
        "hard",
        [
            {
                "id": "busy",
                "action": "shell",
                "target": "primary",
                "with": {"command": ["sh", "-c", f"setsid sleep {token} & sleep {token}"]},
                "timeout": "60s",
            }
        ],
    )
    before = journals(lab)
    proc = start("run", str(playbook), "--env", str(env), env=process_env())
    journal = wait_for_step(lab, before, "busy", proc)
    try:
        wait_until(lambda: len(_pids_with(token)) >= 3, 10, "the command's processes")
        running = _pids_with(token)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)
        took, out, err = stop(proc, "ctrl-c")
        left = [pid for pid in running if alive(pid)]
    finally:
        for pid in _pids_with(token):  # what a failing test left: ours, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 3 and took < STOP_WITHIN, out + err
    assert "Traceback" not in out + err
    # The hard stop killed the command in progress, and what escaped it, before drctl exited.
    assert left == [], f"left running after the hard stop: {left}"
    record = show(journal.name.split(".")[0])
    assert record["status"] == "interrupted"
    assert "in the middle of step busy (a second signal stopped it hard)" in record["reason"]
    assert record["interruptions"][-1]["hard"] is True


def _pids_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if token.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


# -- resume and abort of a real switchover ------------------------------------------------------


def test_resume_continues_an_interrupted_switchover(
    lab: Path, tmp_path: Path, no_leftover_lock: list[str]
) -> None:
    pair = AnyLab(lab, "lab")
    pair.wait_streaming()
    before_roles = pair.roles_now()
    old_primary = pair.role_of("primary")
    env = env_copy(lab, tmp_path, "lab-resume")
    no_leftover_lock.append("lab-resume")
    playbook = held_switchover(tmp_path, "promote_standby", 3)
    before = journals(lab)
    proc = start("run", str(playbook), "--env", str(env), env=process_env())
    journal = wait_for_step(lab, before, "hold", proc)
    took, out, err = stop(proc, "sigterm")
    assert proc.returncode == 3 and took < STOP_WITHIN, out + err
    assert "Traceback" not in out + err
    run_id = journal.name.split(".")[0]
    record = show(run_id)
    state = record["interruptions"][-1]["state"]
    assert state["down"] == [old_primary] and state["unfilled"] == ["standby"]
    assert f"left: {old_primary} is down" in out and "left: role standby is unfilled" in out
    # Past the promotion there is no way back: abort refuses and changes nothing.
    assert [c["command"] for c in record["interruptions"][-1]["next"]] == [
        f"drctl resume {run_id}",
        "drctl unlock lab-resume",
    ]
    lock_before, journal_before = lock_text(lab, "lab-resume"), journal.read_bytes()
    refused = drctl("abort", run_id)
    assert refused.returncode == 3 and "no way back" in refused.stderr
    assert f"drctl resume {run_id}" in refused.stderr
    assert lock_text(lab, "lab-resume") == lock_before and journal.read_bytes() == journal_before

    resumed = drctl("resume", run_id)
    assert "Traceback" not in resumed.stdout + resumed.stderr
    final = RecordStore(lab / "records", lab / "locks").sealed(run_id).record
    assert [(s.id, s.status) for s in final.steps] == [
        ("stop_primary", "passed"),
        ("confirm_standby_caught_up", "passed"),
        ("promote_standby", "passed"),
        ("hold", "passed"),
        ("verify_service", "passed"),
        ("rejoin_old_primary", "passed"),
    ]
    assert len(final.interruptions) == 1 and len(final.resumptions) == 1
    resumption = final.resumptions[0]
    assert resumption["how"] == "resume" and resumption["from_step"] == "hold"
    assert resumption["asked"][0]["step"] == "promote_standby"
    assert all(c["verdict"] == "held" for c in resumption["asked"][0]["checks"])
    assert resumption["observed"][old_primary] == "down"
    # The probes died with the interrupted process: the record does not claim their figures.
    assert final.status == "failed" and resumed.returncode == 1
    assert "rpo not measured" in final.reason
    rto = next(o for o in final.objectives if o.name == "rto")
    assert rto.measured_seconds is not None and rto.measured_seconds > 3  # the hold counts
    pair.wait_streaming()
    assert pair.roles_now() == {
        name: "standby" if role == "primary" else "primary" for name, role in before_roles.items()
    }
    assert lock_text(lab, "lab-resume") == ""


def test_abort_rolls_back_an_interrupted_switchover(
    lab: Path, tmp_path: Path, no_leftover_lock: list[str]
) -> None:
    pair = AnyLab(lab, "lab")
    pair.wait_streaming()
    before_roles = pair.roles_now()
    old_primary = pair.role_of("primary")
    env = env_copy(lab, tmp_path, "lab-abort")
    no_leftover_lock.append("lab-abort")
    playbook = held_switchover(tmp_path, "stop_primary", 60)
    before = journals(lab)
    proc = start("run", str(playbook), "--env", str(env), env=process_env())
    journal = wait_for_step(lab, before, "hold", proc)
    took, out, err = stop(proc, "ctrl-c")
    assert proc.returncode == 3 and took < STOP_WITHIN, out + err
    run_id = journal.name.split(".")[0]
    interruption = show(run_id)["interruptions"][-1]
    assert interruption["state"]["down"] == [old_primary]
    assert interruption["state"]["unfilled"] == ["primary"]
    assert {"command": f"drctl abort {run_id}", "does": "rolls back: restart_old_primary"} in (
        interruption["next"]
    )
    assert_refused_fast(playbook, env, run_id)

    aborted = drctl("abort", run_id)
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert "Traceback" not in aborted.stdout + aborted.stderr
    final = RecordStore(lab / "records", lab / "locks").sealed(run_id).record
    assert final.status == "aborted" and final.rolled_back
    assert [(s.id, s.phase, s.status) for s in final.steps] == [
        ("stop_primary", "main", "passed"),
        ("restart_old_primary", "rollback", "passed"),
    ]
    assert "rolled back: restart_old_primary (each verified by its checks)" in final.reason
    pair.wait_streaming()
    assert pair.roles_now() == before_roles
    assert lock_text(lab, "lab-abort") == ""
    again = drctl("resume", run_id)
    assert again.returncode == 3 and "sealed" in again.stderr


# -- before Prefect, and nothing outliving drctl -----------------------------------------------


def test_a_locked_environment_is_refused_before_prefect_starts(lab: Path, tmp_path: Path) -> None:
    env = env_copy(lab, tmp_path, "lab-locked")
    playbook = slow_playbook(tmp_path)
    locks = lab / "locks"
    began = time.monotonic()
    assert refusal(locks, "lab-locked") is None
    assert time.monotonic() - began < 0.05
    held = EnvironmentLock(locks, "lab-locked")
    held.acquire("R-live", time.time())  # a live run: this process holds the lock
    try:
        # With the temporary API wanted, Prefect would take 10 to 25 s to start.
        environ = process_env(DRCTL_PREFECT_EPHEMERAL="1")
        began = time.monotonic()
        busy = subprocess.run(
            [str(Path(sys.executable).parent / "drctl"), "run", str(playbook), "--env", str(env)],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        took = time.monotonic() - began
        assert busy.returncode == 3 and "in use by run R-live" in busy.stderr
        assert f"pid {os.getpid()}" in busy.stderr and "Traceback" not in busy.stderr
        assert took < 2.5, f"refused after {took:.2f}s"
        assert "temporary API" not in busy.stdout
    finally:
        held.keep("stopped by SIGTERM while step long waited")  # now it is left behind
    try:
        assert_refused_fast(playbook, env, "R-live", DRCTL_PREFECT_EPHEMERAL="1")
    finally:
        assert drctl("unlock", "lab-locked").returncode == 0


def test_the_temporary_prefect_api_survives_ctrl_c_and_dies_with_drctl(
    lab: Path, tmp_path: Path, no_leftover_lock: list[str]
) -> None:
    env = env_copy(lab, tmp_path, "lab-ephemeral")
    no_leftover_lock.append("lab-ephemeral")
    playbook = slow_playbook(tmp_path)
    environ = process_env(DRCTL_PREFECT_EPHEMERAL="1")

    # Ctrl-C: the API is in a session of its own, so the run is recorded through it, then it
    # stops with drctl.
    before = journals(lab)
    proc = start("run", str(playbook), "--env", str(env), env=environ)
    journal = wait_for_step(lab, before, "long", proc)
    servers = server_children(proc.pid)
    assert len(servers) == 1, servers
    assert os.getsid(servers[0]) != os.getsid(proc.pid)
    took, out, err = stop(proc, "ctrl-c")
    assert proc.returncode == 3 and took < STOP_WITHIN, out + err
    assert "Traceback" not in out + err and "ConnectError" not in err
    record = show(journal.name.split(".")[0])
    assert record["status"] == "interrupted"
    assert record["orchestrator"]["prefect_api"] == "ephemeral"
    wait_until(lambda: not alive(servers[0]), 10, "the temporary API's end")
    assert drctl("unlock", "lab-ephemeral").returncode == 0

    # SIGKILL: nothing runs drctl's exit; the kernel kills the API (its parent-death signal).
    before = journals(lab)
    proc = start("run", str(playbook), "--env", str(env), env=environ)
    wait_for_step(lab, before, "long", proc)
    servers = server_children(proc.pid)
    assert len(servers) == 1, servers
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    wait_until(lambda: not alive(servers[0]), 10, "the temporary API's death with drctl")


def test_a_run_over_ssh_stops_at_once_and_is_aborted(
    lab_ssh: Path, tmp_path: Path, no_leftover_lock: list[str]
) -> None:
    env = env_copy(lab_ssh, tmp_path, "lab-ssh-stop", base="lab-ssh")
    no_leftover_lock.append("lab-ssh-stop")
    playbook = slow_playbook(tmp_path)
    before = journals(lab_ssh)
    proc = start("run", str(playbook), "--env", str(env), env=process_env())
    journal = wait_for_step(lab_ssh, before, "long", proc)
    took, out, err = stop(proc, "sigterm")
    assert proc.returncode == 3 and took < STOP_WITHIN, out + err
    assert "Traceback" not in out + err
    run_id = journal.name.split(".")[0]
    state = show(run_id)["interruptions"][-1]["state"]
    assert sorted(r for n, r in state["observed"].items() if n != "app") == ["primary", "standby"]
    aborted = drctl("abort", run_id)
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert lock_text(lab_ssh, "lab-ssh-stop") == ""
