"""`drctl lab up` never starts a node as a second primary (issue 10, section 3).

Once, after an interrupted rejoin, `drctl lab up` started the half-rewound old primary next to
the new one and exited 0. The decision (``plan_start``) is tested on its own; then the state is
made for real: on a one-host lab of its own the primary is killed (every process, kill -9), the
standby promoted, and a rejoin's ``pg_rewind`` started and SIGKILLed while it runs; `lab up`
must refuse that node, exit 3 and name what to run, leave the new primary alone, and, with both
nodes stopped, start only the one promoted last. The same on the session's two-site lab, over
SSH, which is then rejoined for the next test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from drills.lab.primaryguard import NodeFacts, parse_controldata, plan_start
from tests.helpers import alive, drctl, wait_until
from tests.labs import AnyLab
from tests.pg_fixtures import RUN_AS, postgres_processes_under, private_home
from tests.test_real_failover import kill_instance, restore_pair


def stopped(name: str, signal_file: bool = False, timeline: int = 1) -> NodeFacts:
    control = {
        "Database cluster state": "in production",
        "Latest checkpoint's TimeLineID": str(timeline),
    }
    return NodeFacts(name, False, None, signal_file, control)


def test_a_node_without_standby_signal_is_never_started_next_to_a_primary() -> None:
    plan = plan_start([stopped("pg1"), NodeFacts("pg2", True, "primary")])
    assert plan.start == []
    sentence = plan.refused["pg1"]
    assert "pg1 was not started" in sentence and "second primary while pg2 runs" in sentence
    assert "cluster state 'in production', timeline 1" in sentence
    assert "`drctl resume RUN_ID`" in sentence and "`drctl lab down`" in sentence
    # A standby (standby.signal) is started; so is a lone stopped primary next to a standby.
    assert plan_start([stopped("pg1", True), NodeFacts("pg2", True, "primary")]).start == ["pg1"]
    alone = plan_start([stopped("pg1"), NodeFacts("pg2", True, "standby")])
    assert alone.start == ["pg1"] and not alone.refused


def test_of_two_stopped_primaries_only_the_one_promoted_last_starts() -> None:
    plan = plan_start([stopped("pg1", timeline=1), stopped("pg2", timeline=2)])
    assert plan.start == ["pg2"] and list(plan.refused) == ["pg1"]
    assert "pg2 (timeline 2, promoted after it) is started" in plan.refused["pg1"]
    tie = plan_start([stopped("pg1", timeline=3), stopped("pg2", timeline=3)])
    assert tie.start == [] and set(tie.refused) == {"pg1", "pg2"}
    assert "cannot be told from here" in tie.refused["pg2"]
    # Primary first, then the standbys.
    assert plan_start([stopped("pg1", True), stopped("pg2")]).start == ["pg2", "pg1"]


def test_pg_controldata_lines() -> None:
    text = (
        "pg_control version number:            1800\n"
        "Database cluster state:               shut down\n"
        "Latest checkpoint's TimeLineID:       2\n"
    )
    control = parse_controldata(text)
    assert control["Database cluster state"] == "shut down"
    assert NodeFacts("pg1", False, control=control).timeline == 2


# -- for real -----------------------------------------------------------------------------------


def promote(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pg_promote(wait => true)")
        row = conn.execute("select pg_is_in_recovery()").fetchone()
    assert row is not None and row[0] is False


def interrupted_rewind(pg_bin: str, data_dir: str, source: str) -> str:
    """A rejoin's pg_rewind, SIGKILLed while it runs: the node is left half rewound."""
    argv = [f"{pg_bin}/pg_rewind", f"--target-pgdata={data_dir}", f"--source-server={source}"]
    if RUN_AS is not None:
        argv = ["runuser", "-u", RUN_AS, "--", *argv]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/", start_new_session=True
    )
    time.sleep(0.15)  # long enough to start, shorter than its crash recovery and copy
    os.killpg(proc.pid, signal.SIGKILL)  # runuser and pg_rewind, as a kill -9 of the rejoin
    out, _ = proc.communicate(timeout=10)
    wait_until(lambda: not in_group(proc.pid), 10, "pg_rewind to go")
    return out.decode(errors="replace")


def in_group(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if len(fields) > 3 and int(fields[3]) == pgid and alive(int(entry)):
                found.append(int(entry))
    return found


def roles(home: Path, sites: int = 1) -> dict[str, str]:
    args = ["lab", "status", "--json"]
    status = drctl(*args, home=home, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    import json

    data = json.loads(status.stdout)
    env = "lab" if sites == 1 else "lab-ssh"
    return {n["name"]: n["role"] for n in data["labs"][env]["nodes"]}


@pytest.mark.lab
def test_lab_up_refuses_a_half_rewound_node_and_starts_only_the_newest_primary() -> None:
    with private_home("drctl-guard-") as home:
        try:
            up = drctl("lab", "up", home=home, timeout=180)
            assert up.returncode == 0, up.stdout + up.stderr
            env = yaml.safe_load((home / "environments" / "lab.yaml").read_text())
            pg1, pg2 = env["nodes"]["pg1"], env["nodes"]["pg2"]
            dsn2 = f"host=127.0.0.1 port={pg2['port']} user=postgres dbname=postgres"
            kill_instance(pg1["postgres"]["data_dir"])
            promote(dsn2)
            interrupted_rewind(
                pg1["postgres"]["bin_dir"],
                pg1["postgres"]["data_dir"],
                f"host=127.0.0.1 port={pg2['port']} user=postgres",
            )
            assert not Path(pg1["postgres"]["data_dir"], "standby.signal").exists()

            refused = drctl("lab", "up", home=home, timeout=120)
            assert refused.returncode == 3, refused.stdout + refused.stderr
            said = " ".join(refused.stderr.split())
            assert "pg1 was not started" in said and "second primary while pg2 runs" in said
            assert "pg_rewind --target-pgdata=" in said and "Traceback" not in said
            assert roles(home) == {"pg1": "down", "pg2": "primary"}

            # Both stopped: only pg2, promoted last (timeline 2), comes up.
            for node in (pg2,):
                subprocess.run(
                    (["runuser", "-u", RUN_AS, "--"] if RUN_AS else [])
                    + [f"{node['postgres']['bin_dir']}/pg_ctl", "-D", node["postgres"]["data_dir"]]
                    + ["-w", "-m", "fast", "stop"],
                    check=True,
                    capture_output=True,
                    cwd="/",
                )
            both = drctl("lab", "up", home=home, timeout=120)
            assert both.returncode == 3, both.stdout + both.stderr
            said = " ".join(both.stderr.split())
            assert "pg2 (timeline 2, promoted after it) is started as the primary" in said
            assert "Started: pg2." in said
            assert roles(home) == {"pg1": "down", "pg2": "primary"}
        finally:
            down = drctl("lab", "down", home=home, timeout=180)
        assert down.returncode == 0, down.stdout + down.stderr
        assert postgres_processes_under(home) == []


@pytest.mark.lab
def test_the_two_site_lab_never_starts_a_second_primary_over_ssh(
    lab_ssh: Path, tmp_path: Path
) -> None:
    lab = AnyLab(lab_ssh, "lab-ssh")
    with lab.active():
        lab.wait_streaming()
        old, new = lab.role_of("primary"), lab.role_of("standby")
        try:
            pg = lab.node(old).postgres
            assert pg is not None
            kill_instance(pg.data_dir)
            promote(lab.dsn(new))
            refused = drctl("lab", "up", "--sites", "2", home=lab_ssh, timeout=120)
            assert refused.returncode == 3, refused.stdout + refused.stderr
            said = " ".join(refused.stderr.split())
            assert f"{old} was not started" in said and f"while {new} runs as the primary" in said
            assert "ssh -p" in said  # where the hand rejoin runs
            assert lab.roles_now() == {old: "down", new: "primary"}
        finally:
            restore_pair(lab, tmp_path)
        assert lab.roles_now() == {old: "standby", new: "primary"}
