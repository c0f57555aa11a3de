"""SSH faults through whole drills on the two-site lab (`lab-ssh`): a site's sshd dying in the
middle of a step, a host key that changed between runs, a host key nobody was given, a command
past its deadline; and `plan` and `env check` over SSH.

Each fault must give a located error (the node, the address, what drctl was doing) in the
record, run nothing it should not have, and leave no process behind; the lab's own sshd and
PostgreSQL stay up, or are put back, for the next test. The lab's "hosts" are this machine, so
a test looks at them as their root would: /proc, the sites' files.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.engine.runner import Runner, RunRequest
from drills.lab.twosite import TwoSiteLab
from drills.model.record import Record
from tests.helpers import alive, drctl, kill_tree, pids_with_argument, process_tree, wait_until
from tests.labs import AnyLab

pytestmark = [pytest.mark.lab]

ENV = "lab-ssh"


@dataclass(frozen=True)
class SiteInfo:
    """One site of the session's two-site lab, from its lab.json and environment."""

    name: str  # site-a
    node: str  # pg1
    address: str  # 127.0.0.2
    user: str  # drctl-site-a
    ssh_port: int
    sshd_pid: int
    directory: Path

    @property
    def host_key(self) -> Path:
        return self.directory / "sshd" / "ssh_host_ed25519_key"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.ssh_port}"


def sites(home: Path) -> dict[str, SiteInfo]:
    """The sites by node name (pg1, pg2), as lab.json has them now."""
    state = json.loads((home / "lab-ssh" / "lab.json").read_text())
    return {
        s["node"]: SiteInfo(
            s["name"],
            s["node"],
            s["address"],
            s["os_user"],
            int(state["ssh_port"]),
            int(s["sshd_pid"]),
            Path(s["directory"]),
        )
        for s in state["sites"]
    }


def host_key_fingerprint(pub: Path) -> str:
    """SHA256:... of a public key file, as OpenSSH's ssh-keygen computes it."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def postmasters(home: Path) -> dict[str, int]:
    """Each site's postmaster pid, from its postmaster.pid (the processes must be alive)."""
    found = {}
    for node, site in sites(home).items():
        pid = int((site.directory / "pg" / "postmaster.pid").read_text().split()[0])
        assert alive(pid), f"the postmaster of {node} ({pid}) is not running"
        found[node] = pid
    return found


@pytest.fixture
def two_sites(lab_ssh: Path) -> Iterator[AnyLab]:
    """The session's two-site lab, a streaming pair, DRCTL_HOME pointing at it. After the test
    both sshd are up again and the pair streams (the test puts back what it broke)."""
    lab = AnyLab(lab_ssh, ENV)
    with lab.active():
        lab.wait_streaming()
        yield lab
        lab.wait_streaming()
        # Both sites answer over SSH with the keys in the lab's known_hosts again (status asks
        # each site's host for its postmaster's pid).
        status = TwoSiteLab(lab_ssh).status()
        assert all(s.sshd_alive and s.pid is not None for s in status), status
        # No session of the test is left on either site: each sshd is alone again.
        for site in sites(lab_ssh).values():
            wait_until(
                lambda site=site: process_tree(site.sshd_pid) == [site.sshd_pid],
                10,
                f"the sessions of {site.name}'s sshd to end",
            )


def role_of_node(lab: AnyLab, node: str) -> str:
    """The role (primary or standby) ``node`` has now: a playbook step that targets it runs on
    that node's site, whichever way earlier drills left the pair."""
    return lab.roles_now()[node]


def playbook(tmp_path: Path, name: str, role: str, step: dict[str, Any]) -> Path:
    body = {
        "name": name,
        "version": 1,
        "kind": "inspection",
        "title": {"en": name, "zh": name},
        "roles": [role],
        "steps": [{"target": role, **step}],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True))
    return path


def run(path: Path, environment: str = ENV) -> Record:
    return Runner(RunRequest(playbook=str(path), environment=environment)).run()


def unique() -> str:
    return uuid.uuid4().hex[:12]


def env_copy(tmp_path: Path, home: Path, name: str, known_hosts: dict[str, Path]) -> Path:
    """lab-ssh's environment under another name, some nodes given another known_hosts."""
    data = yaml.safe_load((home / "environments" / f"{ENV}.yaml").read_text())
    data["name"] = name
    for node, path in known_hosts.items():
        data["nodes"][node]["ssh"]["known_hosts"] = str(path)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def empty_file(path: Path) -> Path:
    path.write_text("")
    return path


# -- sshd dies in the middle of a step ------------------------------------------------------------


def test_sshd_killed_mid_step_is_a_located_error_and_up_restores_the_site(
    two_sites: AnyLab, tmp_path: Path
) -> None:
    lab = two_sites
    site = sites(lab.home)["pg1"]
    pg_before = postmasters(lab.home)
    seconds = f"3.{int(unique(), 16) % 10**9:09d}"  # `sleep 3.NNN`: an argument of our own
    path = playbook(
        tmp_path,
        "sshd-dies",
        role_of_node(lab, "pg1"),
        {"id": "long_command", "action": "shell", "with": {"command": ["sleep", seconds]}},
    )
    killed: dict[str, Any] = {}

    def crash_sshd() -> None:
        try:
            wait_until(lambda: pids_with_argument(seconds), 20, "the sleep to start on site A")
            time.sleep(0.5)
            [sleeper] = pids_with_argument(seconds)
            tree = process_tree(site.sshd_pid)
            killed["sleep_under_sshd"] = sleeper in tree
            killed["pids"] = kill_tree(site.sshd_pid)  # the master and every session
            killed["at"] = time.monotonic()
        except BaseException as exc:  # the test reports it
            killed["error"] = exc

    crasher = threading.Thread(target=crash_sshd, daemon=True)
    crasher.start()
    record = run(path)
    ended = time.monotonic()
    crasher.join(30)
    assert "error" not in killed, killed.get("error")
    # The command ran on site A through its sshd, and was running when sshd died; the run
    # noticed at once (it did not wait for the command's 3 s, nor hang).
    assert killed["sleep_under_sshd"] is True and site.sshd_pid in killed["pids"]
    assert ended - killed["at"] < 2, f"the run went on {ended - killed['at']:.1f}s after"

    assert record.status in ("aborted", "failed"), record.status
    [step] = record.steps
    assert (step.id, step.status) == ("long_command", "failed")
    assert step.duration_seconds < 3
    assert "pg1" in step.reason and site.endpoint in step.reason
    assert f"connection to {site.endpoint} lost while running sleep {seconds}" in step.reason
    assert "long_command" in record.reason and site.endpoint in record.reason
    # Nothing of it is left on the host: not the sleep, not the killed sshd or its sessions.
    assert pids_with_argument(seconds) == []
    assert [pid for pid in killed["pids"] if alive(pid)] == []
    assert postmasters(lab.home) == pg_before  # the site's PostgreSQL never noticed

    # `lab up` starts the dead sshd again (same host key); the lab works over SSH again.
    up = TwoSiteLab(lab.home).up()
    assert any(f"started the sshd of {site.name} again" in m for m in up.messages), up.messages
    assert sites(lab.home)["pg1"].sshd_pid != site.sshd_pid
    lab.wait_streaming()
    again = run(
        playbook(
            tmp_path,
            "after",
            role_of_node(lab, "pg1"),
            {"id": "quick", "action": "shell", "with": {"command": "true"}},
        )
    )
    assert again.status == "passed", again.reason
    assert postmasters(lab.home) == pg_before


# -- host keys ------------------------------------------------------------------------------------


@pytest.fixture
def changed_host_key(two_sites: AnyLab, tmp_path: Path) -> Iterator[tuple[SiteInfo, str, str]]:
    """Site A reinstalled (or impersonated): its sshd back on the same address and port with a
    new host key. Yields (site, the old fingerprint, the new one). After, the original key
    files are put back and `lab up` starts the site's own sshd again with them."""
    from drills.lab.sshd import SshSite, public_key_line

    lab = two_sites
    site = sites(lab.home)["pg1"]
    saved = tmp_path / "saved-host-key"
    saved.mkdir()
    for path in (site.host_key, site.host_key.with_suffix(".pub")):
        shutil.copy2(path, saved / path.name)
    old = host_key_fingerprint(site.host_key.with_suffix(".pub"))
    kill_tree(site.sshd_pid)
    drctl_key = public_key_line(lab.home / "lab-ssh" / "drctl_ed25519.pub")
    impostor = SshSite(
        directory=site.directory / "sshd",
        address=site.address,
        port=site.ssh_port,
        allow_users=[site.user],
        authorized_keys={site.user: drctl_key},
    )
    try:
        process = impostor.regenerate_host_key()
        new = host_key_fingerprint(site.host_key.with_suffix(".pub"))
        assert new != old and process.host_fingerprint == new
        yield site, old, new
    finally:
        impostor.stop()
        if impostor.process is not None:
            assert not alive(impostor.process.pid)
        for path in saved.iterdir():
            shutil.copy2(path, site.host_key.parent / path.name)
        TwoSiteLab(lab.home).up()
        assert host_key_fingerprint(site.host_key.with_suffix(".pub")) == old


def test_a_changed_host_key_is_refused_naming_the_fingerprints_and_nothing_runs(
    two_sites: AnyLab, changed_host_key: tuple[SiteInfo, str, str], tmp_path: Path
) -> None:
    site, old, new = changed_host_key
    marker = Path(f"/tmp/drctl-marker-{unique()}")
    pg_before = postmasters(two_sites.home)
    record = run(
        playbook(
            tmp_path,
            "changed-key",
            role_of_node(two_sites, "pg1"),
            {"id": "mark", "action": "shell", "with": {"command": ["touch", str(marker)]}},
        )
    )

    assert record.status == "aborted", (record.status, record.reason)
    [step] = record.steps
    assert step.status == "failed"
    assert "pg1" in step.reason and site.endpoint in step.reason
    assert "host key CHANGED" in step.reason
    assert f"offered ssh-ed25519 {new}" in step.reason and f"expects {old}" in step.reason
    assert "Nothing was run" in step.reason
    assert new in record.reason
    assert not marker.exists()  # nothing ran on the host
    assert postmasters(two_sites.home) == pg_before


def test_an_unknown_host_key_is_refused_naming_its_fingerprint_and_nothing_runs(
    two_sites: AnyLab, tmp_path: Path
) -> None:
    lab = two_sites
    site = sites(lab.home)["pg2"]
    known_hosts = empty_file(tmp_path / "known_hosts")
    env = env_copy(tmp_path, lab.home, "lab-ssh-unknown", {"pg1": known_hosts, "pg2": known_hosts})
    marker = Path(f"/tmp/drctl-marker-{unique()}")
    fingerprint = host_key_fingerprint(site.host_key.with_suffix(".pub"))
    record = run(
        playbook(
            tmp_path,
            "unknown-key",
            role_of_node(lab, "pg2"),
            {"id": "mark", "action": "shell", "with": {"command": ["touch", str(marker)]}},
        ),
        str(env),
    )

    assert record.status == "aborted", (record.status, record.reason)
    [step] = record.steps
    assert step.status == "failed"
    assert "pg2" in step.reason and site.endpoint in step.reason
    assert f"unknown host key ssh-ed25519 {fingerprint}" in step.reason
    assert f"{known_hosts} has no entry for [{site.address}]:{site.ssh_port}" in step.reason
    assert "Nothing was run" in step.reason
    assert not marker.exists()
    assert known_hosts.read_text() == ""  # never written: nothing is auto-accepted


# -- a command past its deadline ------------------------------------------------------------------


def test_a_command_past_its_timeout_fails_and_is_killed_on_the_host(
    two_sites: AnyLab, tmp_path: Path
) -> None:
    lab = two_sites
    site = sites(lab.home)["pg2"]
    seconds = f"300.{int(unique(), 16) % 10**9:09d}"  # `sleep 300.NNN`: only ours
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:  # proves the command did run there, so its absence after means killed
        while not done.is_set() and not seen:
            seen.extend(pids_with_argument(seconds))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        record = run(
            playbook(
                tmp_path,
                "too-slow",
                role_of_node(lab, "pg2"),
                {
                    "id": "slow",
                    "action": "shell",
                    "with": {"command": ["sleep", seconds]},
                    "timeout": "1s",
                },
            )
        )
    finally:
        done.set()
        watcher.join(5)

    assert seen, "the sleep never ran on site B"
    assert record.status in ("aborted", "failed"), record.status
    [step] = record.steps
    assert step.status == "failed"
    assert step.duration_seconds < 10
    assert "pg2" in step.reason and "did not finish within 1s" in step.reason
    assert f"ssh -p {site.ssh_port} {site.user}@{site.address} -- sleep {seconds}" in step.reason
    assert re.search(r"its process group \d+ was killed there", step.reason), step.reason
    # Killed on the host, not merely abandoned: no `sleep 300.NNN` is left there.
    wait_until(lambda: not pids_with_argument(seconds), 5, "the timed-out sleep to go")
    assert not any(alive(pid) for pid in seen)


# -- plan and env check over SSH ------------------------------------------------------------------


def test_plan_over_ssh_shows_the_ssh_command_lines_and_runs_nothing(two_sites: AnyLab) -> None:
    lab = two_sites
    roles = lab.roles_now()
    primary = next(node for node, role in roles.items() if role == "primary")
    site = sites(lab.home)[primary]
    pg_before = postmasters(lab.home)
    records = lab.store.ids()

    result = drctl("plan", "pg-switchover", "--env", ENV, env={"COLUMNS": "400"})

    assert result.returncode == 0, result.stdout + result.stderr
    ssh = f"ssh -p {site.ssh_port} {site.user}@{site.address} -- "
    lines = [line for line in result.stdout.splitlines() if ssh in line]
    assert any(re.search(r"/pg_ctl .*stop", line) for line in lines), result.stdout
    assert any("pg_rewind" in line for line in lines), result.stdout
    assert "nothing was run." in result.stdout
    # Nothing ran: the same roles, the same postmasters, no record.
    assert lab.roles_now() == roles
    assert postmasters(lab.home) == pg_before
    assert lab.store.ids() == records


def test_env_check_shows_each_host_key_matched_and_names_a_node_it_cannot_trust(
    two_sites: AnyLab, tmp_path: Path
) -> None:
    lab = two_sites
    wide = {"COLUMNS": "1000"}
    result = drctl("env", "check", "--env", ENV, env=wide)
    assert result.returncode == 0, result.stdout + result.stderr
    for node, site in sites(lab.home).items():
        fingerprint = host_key_fingerprint(site.host_key.with_suffix(".pub"))
        [line] = [ln for ln in result.stdout.splitlines() if ln.split()[:3] == [node, "✔", "host"]]
        assert f"{site.user}@{site.endpoint} as {site.user}" in line
        assert f"host key {fingerprint} matched" in line
    assert "every node can be reached and acted on" in result.stdout

    env = env_copy(tmp_path, lab.home, "lab-ssh-untrusted", {"pg2": empty_file(tmp_path / "kh")})
    refused = drctl("env", "check", "--env", str(env), env=wide)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    bad = [ln for ln in refused.stdout.splitlines() if "✘" in ln]
    assert bad and all(ln.split()[0] == "pg2" for ln in bad), refused.stdout
    assert any("unknown host key" in ln for ln in bad), refused.stdout
    assert "problem(s)" in refused.stdout
    assert not any(ln.split()[:2] == ["pg1", "✘"] for ln in refused.stdout.splitlines())
