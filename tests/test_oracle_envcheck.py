"""``drctl env check`` on Oracle nodes, against the stand-in over real OpenSSH.

Two loopback SSH sites (127.0.0.2 his-pri, 127.0.0.3 his-dr), each with a fake ORACLE_HOME
holding the command-line stand-ins (``tests/oracle_standin/bin``), the test OS user playing
``oracle``; the SQL goes to the stand-in database through the real ``OracleSession`` (errors
translated by ``drills.executors.oracle``). What is checked per node: the host over SSH, the
home and its tools as ``os_user``, the login with the credential the section names, the role
from ``V$DATABASE``. The last test runs the CLI with the real python-oracledb against a loopback
port where no listener answers.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from drills.engine.envcheck import Finding, check_environment
from drills.engine.targets import LiveConnector
from drills.model.environment import Environment
from tests.oracle_standin.bin import TOOLS, install_home, share_state
from tests.oracle_standin.connector import StandinConnector
from tests.oracle_standin.state import StandinState
from tests.sshd_fixtures import (
    BASTION_ADDRESS,
    NODE_ADDRESS,
    TEST_USER,
    SshLab,
    SshSite,
    free_port,
    needs_sshd,
    ssh_lab,  # noqa: F401  (a fixture)
    stop_and_check,
)

pytestmark = needs_sshd

PASSWORD = "Envcheck-Oracle-Pw-5581"  # planted: it must never show in a finding
NODES = {"his-pri": "his_pri", "his-dr": "his_dr"}


@dataclass
class Sites:
    lab: SshLab
    sites: dict[str, SshSite]
    known_hosts: Path


@pytest.fixture(scope="module")
def sites(ssh_lab: SshLab) -> Iterator[Sites]:  # noqa: F811
    site_a = ssh_lab.site(NODE_ADDRESS, name="envcheck-site-a")
    site_b = ssh_lab.site(BASTION_ADDRESS, name="envcheck-site-b")
    known = ssh_lab.known_hosts(site_a, site_b, name="known_hosts-envcheck")
    yield Sites(ssh_lab, {"his-pri": site_a, "his-dr": site_b}, known)
    stop_and_check(site_a)
    stop_and_check(site_b)


@dataclass
class World:
    state: StandinState
    root: Path
    homes: dict[str, Path]
    sections: dict[str, Any]

    def env(self, **oracle: dict[str, Any]) -> Environment:
        """The environment, with changes to a node's ``oracle:`` section."""
        nodes = {name: dict(section) for name, section in self.sections.items()}
        for name, changes in oracle.items():
            nodes[name.replace("_", "-")]["oracle"] = nodes[name.replace("_", "-")]["oracle"] | (
                changes
            )
        return Environment.model_validate({"name": f"envcheck-{self.root.name}", "nodes": nodes})


@pytest.fixture
def world(sites: Sites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("HIS_ORACLE_PASSWORD", PASSWORD)
    root = sites.lab.directory / f"envcheck-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    state = StandinState.create(root / "state" / "oracle.json", NODES, primary="his-pri",
                                password=PASSWORD)  # fmt: skip
    share_state(state, TEST_USER)
    homes: dict[str, Path] = {}
    sections: dict[str, Any] = {}
    for (name, unique), role in zip(NODES.items(), ("primary", "standby"), strict=True):
        tools = TOOLS if name == "his-pri" else tuple(t for t in TOOLS if t != "rman")
        homes[name] = install_home(
            root / f"home-{name}", node=name, sid="HIS", state=state, owner=TEST_USER, tools=tools
        )
        site = sites.sites[name]
        sections[name] = {
            "role": role,
            "host": site.address,
            "port": 1521,
            "executor": "ssh",
            "ssh": {
                "user": TEST_USER,
                "port": site.port,
                "key_file": str(sites.lab.key),
                "known_hosts": str(sites.known_hosts),
                "use_agent": False,
                "connect_timeout": 5,
            },
            "oracle": {
                "service": unique,
                "user": "c##drctl",
                "password_env": "HIS_ORACLE_PASSWORD",
                "privilege": "sysdg",
                "os_user": TEST_USER,
                "oracle_home": str(homes[name]),
                "oracle_sid": "HIS",
                "db_unique_name": unique,
            },
        }
    yield World(state, root, homes, sections)
    shutil.rmtree(root, ignore_errors=True)


def check(world: World, env: Environment) -> dict[tuple[str, str], Finding]:
    connector = StandinConnector(world.state, env, hosts=LiveConnector().host)
    findings = check_environment(env, connector)
    for finding in findings:
        assert PASSWORD not in finding.detail
    return {(f.node, f.item): f for f in findings}


def test_each_oracle_node_gets_a_line_per_question(world: World) -> None:
    found = check(world, world.env())
    host = found[("his-pri", "host")]
    assert host.verdict == "ok" and f"{NODE_ADDRESS}" in host.detail and "matched" in host.detail
    home = found[("his-pri", "oracle home")]
    assert home.verdict == "ok", home.detail
    assert f"{world.homes['his-pri']}/bin has dgmgrl/rman/sqlplus/expdp/impdp" in home.detail
    assert f"as {TEST_USER}" in home.detail and "ORACLE_SID HIS" in home.detail
    database = found[("his-pri", "database")]
    assert database.verdict == "ok"
    assert "c##drctl@127.0.0.2:1521/his_pri as SYSDG" in database.detail
    assert "password from $HIS_ORACLE_PASSWORD" in database.detail
    assert found[("his-pri", "role")].detail == "PRIMARY, READ WRITE (configured primary)"
    standby = found[("his-dr", "role")]
    assert standby.verdict == "ok" and standby.detail.startswith("PHYSICAL STANDBY, MOUNTED")
    # his-dr's home was installed without rman: named, with its path.
    missing = found[("his-dr", "oracle home")]
    assert missing.verdict == "problem"
    assert missing.detail.endswith(f"{world.homes['his-dr']}/bin/rman")
    assert ("his-dr", "db_unique_name") not in found


def test_a_missing_oracle_home_is_a_problem_that_names_the_path_and_host(world: World) -> None:
    gone = str(world.root / "no-such-home")
    found = check(world, world.env(his_pri={"oracle_home": gone}))
    home = found[("his-pri", "oracle home")]
    assert home.verdict == "problem"
    assert home.detail == f"ORACLE_HOME {gone} does not exist on {TEST_USER}@{NODE_ADDRESS}:" + (
        f"{world.sections['his-pri']['ssh']['port']} as {TEST_USER} (oracle_home)"
    )
    assert found[("his-pri", "database")].verdict == "ok"  # the other questions still answered
    unset = check(world, world.env(his_pri={"oracle_home": None}))
    assert "no oracle.oracle_home" in unset[("his-pri", "oracle home")].detail


def test_wrong_credentials_are_translated_with_what_to_do(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIS_ORACLE_WRONG", "not-the-password")
    found = check(world, world.env(his_dr={"password_env": "HIS_ORACLE_WRONG"}))
    database = found[("his-dr", "database")]
    assert database.verdict == "problem"
    assert "ORA-01017" in database.detail and "node his-dr" in database.detail
    assert "wrong user or password: check the node's `user`" in database.detail
    assert "not-the-password" not in database.detail
    assert ("his-dr", "role") not in found  # no role is claimed without a login
    assert found[("his-pri", "database")].verdict == "ok"


def test_an_unset_password_variable_and_a_wallet_without_password(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HIS_ORACLE_PASSWORD")
    wallet = world.root / "wallet"
    wallet.mkdir()
    (wallet / "ewallet.pem").write_text("-----BEGIN PRIVATE KEY-----\nstand-in\n")
    env = world.env(his_dr={"password_env": None, "wallet_dir": str(wallet)})
    found = check(world, env)
    unset = found[("his-pri", "database")]
    assert unset.verdict == "problem"
    assert "environment variable HIS_ORACLE_PASSWORD (an Oracle password) is not set" in (
        unset.detail
    )
    wallet_only = found[("his-dr", "database")]
    said = wallet_only.detail
    assert wallet_only.verdict == "problem" and f"no password, wallet {wallet}" in said
    assert "DPY-4001" in said and "password_env or password_file" in said


def test_a_role_that_moved_is_a_note_and_a_wrong_unique_name_a_problem(world: World) -> None:
    world.state.switchover("his-dr")
    found = check(world, world.env(his_pri={"db_unique_name": "his_old"}))
    moved = found[("his-pri", "role")]
    assert moved.verdict == "note" and moved.detail.startswith("PHYSICAL STANDBY")
    assert found[("his-dr", "role")].detail == "PRIMARY, READ WRITE (configured standby)"
    unique = found[("his-pri", "db_unique_name")]
    assert unique.verdict == "problem" and "the database says his_pri" in unique.detail


def test_the_cli_reaches_the_host_and_names_the_missing_listener(
    world: World, sites: Sites, home: Path
) -> None:
    """The real executors end to end: SSH to the site, the home checked there, and the real
    python-oracledb refused at a loopback port where no listener runs."""
    from drills.cli.app import app

    port = free_port(NODE_ADDRESS)
    section = dict(world.sections["his-pri"]) | {"port": port}
    path = world.root / "env.yaml"
    path.write_text(yaml.safe_dump({"name": "envcheck-cli", "nodes": {"his-pri": section}}))
    result = CliRunner().invoke(app, ["env", "check", "--env", str(path)])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "oracle home" in text and "bin has dgmgrl/rman/sqlplus/expdp/impdp" in text
    assert "DPY-6005" in text and "no listener at that host:port" in text
    assert PASSWORD not in result.output
