"""The fault scenarios of issue 10, each a small function of a :class:`Context` that returns
an :class:`Outcome`. :func:`judge` applies the must-holds to every one:

- the record never states a loss smaller than the outside writer saw;
- a drill that ends leaves one primary with the other streaming, or the record says why not;
- nothing is left running (drctl, what it started, a scenario's marked commands).

A scenario that needs a command drctl does not have yet (``drctl resume``, ``drctl abort``)
says "not available" and counts as not survived.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from drills.engine.runner import Runner, RunRequest
from drills.lab import link
from drills.model.record import Record
from tests.faults.support import (
    Context,
    Outcome,
    Run,
    Writer,
    complete,
    counted,
    drctl,
    has_command,
    kill_left,
    lab_of,
    load,
    pair_state,
    run_until,
    says,
    settle_left,
)
from tests.test_real_failover import kill_instance

Scenario = Callable[[Context], Outcome]


def judge(
    ctx: Context,
    name: str,
    record: Record | None,
    writer: Writer | None = None,
    markers: tuple[str, ...] = (),
    expect: Callable[[Record | None], str] | None = None,
) -> Outcome:
    """The must-holds, and the scenario's own expectation (``expect``: '' or what failed)."""
    out = Outcome(name, ctx.lab.env, says=says(record), complete=complete(record))
    if writer is not None:
        writer.stop()
    problem = pair_state(ctx, record)
    if problem:
        out.problems.append(problem)
    if writer is not None:
        with contextlib.suppress(Exception):  # no primary left: start what can be (the guard)
            if "primary" not in ctx.lab.roles_now().values():
                lab_of(ctx).up()
        out.lost, out.counted = writer.lost(), counted(record)
        if out.lost and (out.counted is None or out.counted < out.lost):
            out.problems.append(f"the writer lost {out.lost}, the record counted {out.counted}")
    else:
        out.counted = counted(record)
    out.left = settle_left(ctx, markers)
    if out.left:
        out.problems.append("left running: " + "; ".join(out.left))
        kill_left(ctx, markers)
    if not out.complete:
        out.problems.append("the record is not complete")
    if expect is not None:
        wrong = expect(record)
        if wrong:
            out.problems.append(wrong)
    out.survived = not out.problems
    return out


def in_process(playbook: str | Path, environment: str, **request: Any) -> Record:
    return Runner(RunRequest(playbook=str(playbook), environment=environment, **request)).run()


def status_is(*wanted: str, words: str = "") -> Callable[[Record | None], str]:
    def check(record: Record | None) -> str:
        if record is None:
            return "no record"
        if record.status not in wanted:
            return f"status {record.status}, expected {'/'.join(wanted)}"
        if words and words not in (record.reason or ""):
            return f"the reason does not say {words!r}"
        return ""

    return check


def marker() -> str:
    return f"{int(uuid.uuid4().hex[:8], 16) % 10**8:08d}"


def shell_playbook(ctx: Context, name: str, role: str, step: dict[str, Any]) -> Path:
    return ctx.playbook(
        name,
        {
            "name": name,
            "version": 1,
            "kind": "inspection",
            "title": {"en": name, "zh": name},
            "roles": [role],
            "steps": [{"target": role, **step}],
        },
    )


# -- drctl killed, then resumed or aborted --------------------------------------------------------


def _killed_then(ctx: Context, name: str, when: str, then: str, delay: float = 0.0) -> Outcome:
    writer = Writer(ctx.lab).start()
    run = run_until(
        ctx, ["run", "pg-switchover", "--env", ctx.lab.env], when, signal.SIGKILL, delay
    )
    if not has_command(ctx, then):
        record = load(ctx, run.run_id)
        out = judge(ctx, name, record, writer)
        out.available, out.survived = False, False
        out.says = f"`drctl {then}` not available; " + out.says
        return out
    follow = drctl(ctx, then, run.run_id or "", timeout=180)
    record = load(ctx, run.run_id)
    out = judge(ctx, name, record, writer)
    if follow.returncode not in (0, 1):
        out.problems.append(f"`drctl {then}` exited {follow.returncode}: {follow.stdout[-200:]}")
        out.survived = False
    return out


def kill9_in_preconditions(ctx: Context) -> Outcome:
    return _killed_then(ctx, "SIGKILL in preconditions, abort", '"run_started"', "abort")


def kill9_in_destructive_step(ctx: Context) -> Outcome:
    return _killed_then(ctx, "SIGKILL in stop_primary, resume", '"stop_primary"', "resume")


def kill9_in_rejoin(ctx: Context) -> Outcome:
    return _killed_then(
        ctx, "SIGKILL in rejoin, resume", '"rejoin_old_primary"', "resume", delay=0.1
    )


# -- SIGTERM and SIGINT mid-step ------------------------------------------------------------------


def _signalled(ctx: Context, name: str, sig: signal.Signals) -> Outcome:
    """The signal lands as a real switchover starts promoting the standby (where a SIGTERM once
    left no primary): the promotion finishes, the run stops there (exit 3 within 5 s, no
    traceback), the record is interrupted with the lock kept, and `drctl resume` completes the
    switchover: one primary, the other streaming."""
    writer = Writer(ctx.lab).start()
    run = run_until(
        ctx,
        ["run", "pg-switchover", "--env", ctx.lab.env],
        '"step": "promote_standby", "phase": "main"',  # its step_started event
        sig,
        group=sig == signal.SIGINT,
    )
    stopped = load(ctx, run.run_id)
    wrong = status_is("interrupted")(stopped)
    if run.returncode != 3:
        wrong += f" exit {run.returncode}, not 3"
    if run.exit_seconds is None or run.exit_seconds > 5:
        wrong += f" exited {run.exit_seconds}s after the signal (at most 5)"
    if "Traceback" in run.output:
        wrong += " a traceback"
    refused = drctl(ctx, "run", "pg-switchover", "--env", ctx.lab.env, timeout=60)
    if refused.returncode != 3:
        wrong += f" the lock was not kept (a second run exited {refused.returncode})"
    follow = drctl(ctx, "resume", run.run_id or "", timeout=180)
    record = load(ctx, run.run_id)
    out = judge(ctx, name, record, writer, expect=lambda _: wrong.strip())
    if follow.returncode not in (0, 1):
        out.problems.append(f"`drctl resume` exited {follow.returncode}: {follow.stdout[-200:]}")
        out.survived = False
    return out


def sigterm_mid_step(ctx: Context) -> Outcome:
    return _signalled(ctx, "SIGTERM mid-step", signal.SIGTERM)


def sigint_mid_step(ctx: Context) -> Outcome:
    return _signalled(ctx, "SIGINT (Ctrl-C) mid-step", signal.SIGINT)


# -- a node killed during a drill -----------------------------------------------------------------


def _data_dir(ctx: Context, node: str) -> str:
    pg = ctx.lab.node(node).postgres
    assert pg is not None
    return pg.data_dir


def _kill_when(ctx: Context, node: str, step: str) -> threading.Thread:
    """Kill ``node``'s instance (kill -9, every process) when a journal shows ``step`` start."""
    before = set((ctx.home / "records").glob("*.journal.jsonl"))

    def watch() -> None:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            for path in set((ctx.home / "records").glob("*.journal.jsonl")) - before:
                with contextlib.suppress(OSError):
                    if f'"step": "{step}"' in path.read_text():
                        kill_instance(_data_dir(ctx, node))
                        return
            time.sleep(0.003)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def primary_killed_in_switchover(ctx: Context) -> Outcome:
    primary = ctx.lab.role_of("primary")
    writer = Writer(ctx.lab).start()
    killer = _kill_when(ctx, primary, "stop_primary")  # racing its clean stop
    record = in_process("pg-switchover", ctx.lab.env)
    killer.join(5)
    return judge(ctx, "primary killed in a switchover", record, writer)


def standby_killed_in_failover(ctx: Context) -> Outcome:
    standby = ctx.lab.role_of("standby")
    writer = Writer(ctx.lab).start()
    killer = _kill_when(ctx, standby, "fence_old_primary")
    record = in_process("pg-failover", ctx.lab.env)
    killer.join(5)
    # Both nodes down: the record must say so (the pair cannot be whole); then it is put back.
    return judge(ctx, "standby killed in a failover", record, writer)


# -- the replication link -------------------------------------------------------------------------


def _through_proxy(ctx: Context) -> link.Route:
    return link.route_standby(ctx.lab.environment, ctx.lab_dir)


def link_cut_switchover(ctx: Context) -> Outcome:
    route = _through_proxy(ctx)
    writer = Writer(ctx.lab)
    route.proxy.cut()
    writer.write(300)
    time.sleep(1.5)  # past the precondition's 1 s of lag
    # pg.streaming is left out: through a proxy the standby streams from the proxy's address.
    record = in_process(ctx.shipped("pg-switchover", ("pg.streaming",)), ctx.lab.env)
    route.proxy.restore()
    return judge(
        ctx,
        "link cut, switchover",
        record,
        writer,
        expect=status_is("aborted", words="pg.replay_lag"),
    )


def link_throttled_switchover(ctx: Context) -> Outcome:
    route = _through_proxy(ctx)
    writer = Writer(ctx.lab)
    route.proxy.throttle(rate=20000, latency=0.05)
    writer.write(50)
    with contextlib.suppress(Exception):  # 2 MB of WAL the standby cannot keep up with
        import psycopg

        with psycopg.connect(writer.dsn, autocommit=True) as conn:
            conn.execute("create table if not exists public.fault_bulk (b text)")
            conn.execute(
                "insert into public.fault_bulk"
                " select repeat('x', 1000) from generate_series(1, 2000)"
            )
    record = in_process(ctx.shipped("pg-switchover", ("pg.streaming",)), ctx.lab.env)
    route.proxy.restore()
    return judge(
        ctx,
        "link throttled, switchover",
        record,
        writer,
        expect=status_is("aborted", words="pg.replay_lag"),
    )


def link_throttled_failover(ctx: Context) -> Outcome:
    route = _through_proxy(ctx)
    writer = Writer(ctx.lab)
    route.proxy.throttle(rate=1500)  # bytes/s: the standby falls behind the writer at once
    writer.write(400)
    record = in_process(ctx.shipped("pg-failover", ("pg.streaming",)), ctx.lab.env)
    route.proxy.restore()

    def expect(record: Record | None) -> str:
        if record is None or record.measurements.lost_transactions is None:
            return "no lost_transactions in the record"
        return "" if writer.lost() > 0 else "the throttle lost nothing: the scenario proved nothing"

    return judge(ctx, "link throttled, failover", record, writer, expect=expect)


# -- SSH (two sites) ------------------------------------------------------------------------------


def ssh_dropped(ctx: Context) -> Outcome:
    from tests.helpers import kill_tree, pids_with_argument, wait_until
    from tests.test_real_failover import ssh_sites

    seconds = f"3.{marker()}"
    node = ctx.lab.role_of("primary")
    sshd = int(ssh_sites(ctx.home)[node]["sshd_pid"])
    path = shell_playbook(
        ctx,
        "sshd-dies",
        "primary",
        {"id": "long_command", "action": "shell", "with": {"command": ["sleep", seconds]}},
    )

    def crash() -> None:
        with contextlib.suppress(AssertionError):
            wait_until(lambda: pids_with_argument(seconds), 20, "the sleep")
            time.sleep(0.3)
            kill_tree(sshd)

    thread = threading.Thread(target=crash, daemon=True)
    thread.start()
    record = in_process(path, ctx.lab.env)
    thread.join(30)
    return judge(
        ctx,
        "SSH dropped mid-command",
        record,
        markers=(seconds,),
        expect=status_is("aborted", "failed", words="connection to"),
    )


def host_key_changed(ctx: Context) -> Outcome:
    from drills.lab.sshd import SshSite, public_key_line
    from drills.lab.twosite import TwoSiteLab
    from tests.helpers import kill_tree
    from tests.test_real_failover import ssh_sites

    node = ctx.lab.role_of("primary")
    site = ssh_sites(ctx.home)[node]
    directory = Path(site["directory"])
    key = directory / "sshd" / "ssh_host_ed25519_key"
    saved = ctx.tmp / f"hostkey-{marker()}"
    saved.mkdir()
    for p in (key, key.with_suffix(".pub")):
        shutil.copy2(p, saved / p.name)
    kill_tree(int(site["sshd_pid"]))
    state = yaml.safe_load((ctx.home / "lab-ssh" / "lab.json").read_text())
    impostor = SshSite(
        directory=directory / "sshd",
        address=site["address"],
        port=int(state["ssh_port"]),
        allow_users=[site["os_user"]],
        authorized_keys={
            site["os_user"]: public_key_line(ctx.home / "lab-ssh" / "drctl_ed25519.pub")
        },
    )
    mark = Path(f"/tmp/drctl-fault-marker-{marker()}")
    try:
        impostor.regenerate_host_key()
        record = in_process(
            shell_playbook(
                ctx,
                "changed-key",
                "primary",
                {"id": "mark", "action": "shell", "with": {"command": ["touch", str(mark)]}},
            ),
            ctx.lab.env,
        )
    finally:
        impostor.stop()
        for p in saved.iterdir():
            shutil.copy2(p, key.parent / p.name)
        TwoSiteLab(ctx.home).up()

    def expect(record: Record | None) -> str:
        wrong = status_is("aborted", words="host key")(record)
        return wrong + (" the command ran on the impostor" if mark.exists() else "")

    return judge(ctx, "host key changed between runs", record, expect=expect)


# -- the database, commands, approvals ------------------------------------------------------------


def database_unreachable(ctx: Context) -> Outcome:
    data = yaml.safe_load(ctx.lab.environment_file.read_text())
    standby = ctx.lab.role_of("standby")
    data["name"] = f"{ctx.lab.env}-unreachable"
    data["nodes"][standby]["port"] = 1  # nobody listens there
    path = ctx.tmp / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    before = ctx.lab.roles_now()
    record = in_process("pg-switchover", str(path))

    def expect(record: Record | None) -> str:
        wrong = status_is("aborted")(record)
        return wrong + ("" if ctx.lab.roles_now() == before else " the roles changed")

    return judge(ctx, "database unreachable", record, expect=expect)


def command_timeout(ctx: Context) -> Outcome:
    seconds = f"300.{marker()}"
    path = shell_playbook(
        ctx,
        "too-slow",
        "standby",
        {"id": "slow", "action": "shell", "with": {"command": ["sleep", seconds]}, "timeout": "1s"},
    )
    start = time.monotonic()
    record = in_process(path, ctx.lab.env)
    took = time.monotonic() - start

    def expect(record: Record | None) -> str:
        return status_is("aborted", "failed", words="did not finish within 1s")(record) + (
            f" took {took:.1f}s" if took > 15 else ""
        )

    return judge(ctx, "command past its timeout", record, markers=(seconds,), expect=expect)


def escaped_grandchild(ctx: Context) -> Outcome:
    seconds, outer = f"300.{marker()}", f"301.{marker()}"
    path = shell_playbook(
        ctx,
        "escaped",
        "standby",
        {
            "id": "escapes",
            "action": "shell",
            "with": {"command": ["sh", "-c", f"setsid sleep {seconds} & sleep {outer}"]},
            "timeout": "2s",
        },
    )
    start = time.monotonic()
    record = in_process(path, ctx.lab.env)
    took = time.monotonic() - start

    def expect(record: Record | None) -> str:
        return status_is("aborted", "failed")(record) + (f" took {took:.1f}s" if took > 15 else "")

    return judge(
        ctx, "escaped grandchild (setsid)", record, markers=(seconds, outer), expect=expect
    )


def approval_timeout(ctx: Context) -> Outcome:
    path = ctx.playbook(
        "ack-timeout",
        {
            "name": "ack-timeout",
            "version": 1,
            "kind": "inspection",
            "title": {"en": "ack", "zh": "ack"},
            "roles": ["app"],
            "steps": [
                {
                    "id": "acknowledge",
                    "action": "human.acknowledge",
                    "target": "app",
                    "timeout": "2s",
                }
            ],
        },
    )
    record = in_process(path, ctx.lab.env)
    return judge(
        ctx, "approval timing out", record, expect=status_is("aborted", "failed", words="2s")
    )


def two_drills_at_once(ctx: Context) -> Outcome:
    from tests.faults.support import start_drctl

    writer = Writer(ctx.lab).start()
    first, before = start_drctl(ctx, "run", "pg-switchover", "--env", ctx.lab.env)
    second, _ = start_drctl(ctx, "run", "pg-switchover", "--env", ctx.lab.env)
    outs = [p.communicate(timeout=180)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    ids = sorted(
        p.name.removesuffix(".journal.jsonl")
        for p in set((ctx.home / "records").glob("*.journal.jsonl")) - before
    )
    records = [load(ctx, i) for i in ids]
    ran = [r for r in records if r is not None and r.steps]
    record = ran[0] if ran else (records[0] if records else None)

    def expect(_: Record | None) -> str:
        refused = sum("lock" in o.lower() or "in use" in o.lower() for o in outs)
        if len(ran) > 1:
            return "both drills ran steps on one environment"
        return "" if refused >= 1 and codes[-1] == 3 else f"exits {codes}: no refusal seen"

    return judge(ctx, "two drills at once", record, writer, expect=expect)


# -- the records disk -----------------------------------------------------------------------------


def _records_mounted(ctx: Context, read_only: bool) -> Outcome:
    name = "records disk read-only" if read_only else "records disk full"
    if os.geteuid() != 0:
        out = Outcome(name, ctx.lab.env, says="needs root (mount)", available=False)
        return out
    records = ctx.home / "records"
    saved = ctx.tmp / f"records-{marker()}"
    shutil.copytree(records, saved)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(records)], check=True)
    run: Run | None = None
    try:
        for item in saved.iterdir():  # what fits: the database, not every journal
            with contextlib.suppress(OSError):
                if item.suffix == ".sqlite3":
                    shutil.copy2(item, records / item.name)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(records)], check=True)
        else:
            with contextlib.suppress(OSError), (records / "filler").open("wb") as fill:
                while True:
                    fill.write(b"\0" * 65536)
        writer = Writer(ctx.lab).start()
        run = run_until(
            ctx,
            ["run", "pg-switchover", "--env", ctx.lab.env],
            "never",
            signal.SIGKILL,
            deadline=120,
        )
        record = None
        for path in list(records.glob("*.journal.jsonl")) + list(
            (ctx.home).glob("**/*.journal.jsonl")
        ):
            record = load(ctx, path.name.removesuffix(".journal.jsonl")) or record
    finally:
        subprocess.run(["umount", "-l", str(records)], check=False)
    refused = record is None and run is not None and run.returncode == 3
    out = judge(ctx, name, record, writer, expect=None if record or refused else status_is("x"))
    if refused:  # refused before a journal was opened: the refusal is all there is to say
        out.problems = [p for p in out.problems if p != "the record is not complete"]
        out.complete, out.survived = True, not out.problems
    out.says = f"exit {run.returncode if run else '?'}; " + (
        out.says if record else " ".join(run.output.split())[-80:] if run else ""
    )
    if run is not None and run.returncode == 0:
        out.problems.append("the run passed with nowhere to keep its record")
        out.survived = False
    return out


def records_disk_full(ctx: Context) -> Outcome:
    return _records_mounted(ctx, read_only=False)


def records_read_only(ctx: Context) -> Outcome:
    return _records_mounted(ctx, read_only=True)


BOTH = ("lab", "lab-ssh")
SCENARIOS: list[tuple[Scenario, tuple[str, ...]]] = [
    (kill9_in_preconditions, BOTH),
    (kill9_in_destructive_step, BOTH),
    (kill9_in_rejoin, BOTH),
    (sigterm_mid_step, BOTH),
    (sigint_mid_step, BOTH),
    (primary_killed_in_switchover, BOTH),
    (standby_killed_in_failover, BOTH),
    (link_cut_switchover, BOTH),
    (link_throttled_switchover, BOTH),
    (link_throttled_failover, BOTH),
    (ssh_dropped, ("lab-ssh",)),
    (host_key_changed, ("lab-ssh",)),
    (database_unreachable, BOTH),
    (command_timeout, BOTH),
    (escaped_grandchild, BOTH),
    (approval_timeout, BOTH),
    (two_drills_at_once, BOTH),
    (records_disk_full, BOTH),
    (records_read_only, BOTH),
]
