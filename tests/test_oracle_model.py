"""The environment's ``oracle:`` section, a playbook's ``engines``, the Oracle secrets, and how
the Oracle executor's errors read (ORA-01017, ORA-12514, ORA-12541, DPY-6005).

Bad input ends in located problems (file, line) through the loader; errors name the node and the
code, and say what to do. The connections go to the stand-in (``tests.oracle_standin``) or to a
closed port on 127.0.0.1: nothing leaves the machine.
"""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path
from typing import Any

import oracledb
import pytest
import yaml

from drills.engine.catalogue import node_engine
from drills.engine.loader import load_environment_file, load_playbook
from drills.engine.policy import check_request, engine_problem
from drills.engine.targets import LiveConnector, Targets
from drills.executors import oracle as ora
from drills.model import redact
from drills.model.environment import Environment, dgmgrl_connect_problem
from drills.model.errors import (
    AuthenticationFailed,
    CommandFailed,
    CommandTimeout,
    ConnectionFailed,
    InputError,
    ValidationFailed,
)
from drills.model.request import RunRequest
from tests.oracle_standin.connector import StandinConnector
from tests.oracle_standin.state import StandinState

REPO = Path(__file__).resolve().parents[1]
HIS_ORACLE = REPO / "playbooks" / "environments" / "his-oracle.yaml"

ORACLE_ENV = """\
name: ora
nodes:
  db1:
    role: primary
    host: 127.0.0.2
    oracle:
      service: his_pri
      user: c##drctl
      password_env: ORA_TEST_LOGIN
{extra}"""


def write(tmp_path: Path, text: str, name: str = "env.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[tuple[int | None, str]]:
    with pytest.raises(ValidationFailed) as caught:
        load_environment_file(path)
    return [(p.line, p.message) for p in caught.value.problems]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# -- the oracle: section ---------------------------------------------------------------------


def test_an_oracle_node_defaults_to_port_1521_and_says_its_engine(tmp_path: Path) -> None:
    env = load_environment_file(write(tmp_path, ORACLE_ENV.format(extra="")))
    node = env.nodes["db1"]
    assert node.port == 1521 and node.engine == "oracle" and node_engine(node) == "oracle"
    assert node.oracle is not None and node.oracle.os_user == "oracle"
    assert node.oracle.dsn(node.host, node.port) == "127.0.0.2:1521/his_pri"


def test_an_unknown_key_in_the_oracle_section_is_located(tmp_path: Path) -> None:
    text = ORACLE_ENV.format(extra="      pasword_env: TYPO\n")
    found = problems_of(write(tmp_path, text))
    assert found == [(line_of(text, "pasword_env"), "unknown key 'pasword_env'")]


def test_a_node_with_postgres_and_oracle_is_located(tmp_path: Path) -> None:
    text = ORACLE_ENV.format(extra="    postgres: {data_dir: /d, bin_dir: /b}\n")
    [(line, message)] = problems_of(write(tmp_path, text))
    assert line == line_of(text, "db1:")
    assert "postgres:" in message and "oracle:" in message and "not both" in message


@pytest.mark.parametrize(
    ("extra", "drop", "says", "at"),
    [
        (
            "",
            "      password_env: ORA_TEST_LOGIN\n",
            "needs password_env or password_file",
            "oracle:",
        ),
        ("      password_file: /etc/pw\n", "", "not both", "oracle:"),
        ("", "      service: his_pri\n", "needs `connect`", "oracle:"),
        ("      wallet_password_env: W\n", "", "wallet_password_env needs wallet_dir", "oracle:"),
        ("      dgmgrl_connect: sys@his_dr\n", "", "dgmgrl_password_env", "oracle:"),
        ("      db_unique_name: 'his dr'\n", "", "db_unique_name", "db_unique_name"),
        ("      privilege: sysoper\n", "", "privilege", "privilege"),
    ],
)
def test_an_inconsistent_oracle_section_is_located(
    tmp_path: Path, extra: str, drop: str, says: str, at: str
) -> None:
    text = ORACLE_ENV.format(extra=extra).replace(drop, "")
    found = problems_of(write(tmp_path, text))
    assert len(found) == 1 and says in found[0][1], found
    assert found[0][0] == line_of(text, at)


def test_a_password_in_dgmgrl_connect_is_refused_and_not_repeated(tmp_path: Path) -> None:
    text = ORACLE_ENV.format(extra="      dgmgrl_connect: sys/Hunter2-secret@his_dr\n")
    [(line, message)] = problems_of(write(tmp_path, text))
    assert line == line_of(text, "oracle:") and "must not hold a password" in message
    assert "Hunter2-secret" not in message


@pytest.mark.parametrize("good", ["/", "/@his_dr", "sys@his_dr"])
def test_dgmgrl_connect_forms_without_a_password_are_accepted(good: str) -> None:
    assert dgmgrl_connect_problem(good) is None


@pytest.mark.parametrize("bad", ["sys/pw@his_dr", "sys/pw", "@his_dr", "sys@", "a b"])
def test_dgmgrl_connect_forms_with_a_password_or_broken_are_refused(bad: str) -> None:
    assert dgmgrl_connect_problem(bad) is not None


def test_the_shipped_his_oracle_environment_loads() -> None:
    env = load_environment_file(HIS_ORACLE)
    assert {n: (node.role, node.engine) for n, node in env.nodes.items()} == {
        "his-pri": ("primary", "oracle"),
        "his-dr": ("standby", "oracle"),
        "app": ("app", None),
        "his-old": ("source", "oracle"),
        "his-new": ("target", "oracle"),
    }
    for name in ("his-pri", "his-dr"):
        access = env.nodes[name].oracle
        assert access is not None and access.os_user == "oracle"
        assert access.primary_service == "his_rw" and access.privilege == "sysdg"
        ssh = env.nodes[name].ssh
        assert ssh is not None and ssh.become is not None and ssh.become.user == "oracle"
    # addresses on loopback only: planning against the file reaches nothing else
    assert all(node.host.startswith("127.") for node in env.nodes.values())


SHIPPED_ORACLE = sorted((REPO / "playbooks").glob("oracle-*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_ORACLE, ids=lambda p: p.stem)
def test_every_shipped_oracle_playbook_may_run_on_his_oracle(path: Path) -> None:
    loaded = load_playbook(path)
    env = load_environment_file(HIS_ORACLE)
    check_request(loaded, env, RunRequest(playbook=path.stem, environment=env.name))


# -- a playbook's engines ----------------------------------------------------------------------


def playbook_file(tmp_path: Path, engines: list[str] | None) -> Path:
    body: dict[str, Any] = {
        "name": "ora-drill",
        "version": 1,
        "kind": "switchover",
        "title": {"en": "Drill", "zh": "演练"},
        "roles": ["primary", "standby"],
        "steps": [{"id": "look", "action": "observe", "target": "primary"}],
    }
    if engines is not None:
        body["engines"] = engines
    path = tmp_path / "ora-drill.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return path


def test_a_playbook_for_postgres_on_an_oracle_environment_is_located(tmp_path: Path) -> None:
    path = playbook_file(tmp_path, ["postgres"])
    loaded = load_playbook(path)
    env = load_environment_file(HIS_ORACLE)
    request = RunRequest(playbook="ora-drill", environment="his-oracle")
    with pytest.raises(ValidationFailed) as caught:
        check_request(loaded, env, request)
    [problem] = caught.value.problems
    assert problem.file == str(path) and problem.line == line_of(path.read_text(), "engines")
    assert "supports engine postgres" in problem.message
    assert "his-pri (oracle)" in problem.message and "his-dr (oracle)" in problem.message


@pytest.mark.parametrize("engines", [["oracle"], ["postgres", "oracle"], None])
def test_a_playbook_for_oracle_or_any_engine_runs_on_oracle(
    tmp_path: Path, engines: list[str] | None
) -> None:
    loaded = load_playbook(playbook_file(tmp_path, engines))
    assert engine_problem(loaded, load_environment_file(HIS_ORACLE)) is None


def test_an_engine_name_must_be_a_name(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_playbook(playbook_file(tmp_path, ["Oracle 19c"]))
    assert "engine 'Oracle 19c' must match" in str(caught.value)


# -- secrets -----------------------------------------------------------------------------------


def test_every_oracle_secret_is_registered_for_redaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Names that say nothing of secrets: only register_environment can know them.
    monkeypatch.setenv("HIS_ORA_LOGIN", "ora-login-value-1")
    monkeypatch.setenv("HIS_WALLET_PIN", "wallet-pin-value-2")
    monkeypatch.setenv("HIS_BROKER_LOGIN", "broker-login-value-3")
    secret_file = tmp_path / "ora.pw"
    secret_file.write_text("file-value-4\n")
    env = Environment.model_validate(
        {
            "name": "secrets",
            "nodes": {
                "a": {
                    "role": "primary",
                    "host": "127.0.0.2",
                    "oracle": {
                        "service": "s",
                        "user": "u",
                        "password_env": "HIS_ORA_LOGIN",
                        "wallet_dir": str(tmp_path),
                        "wallet_password_env": "HIS_WALLET_PIN",
                        "dgmgrl_connect": "sys@his_dr",
                        "dgmgrl_password_env": "HIS_BROKER_LOGIN",
                    },
                },
                "b": {
                    "role": "standby",
                    "host": "127.0.0.3",
                    "oracle": {"service": "s", "user": "u", "password_file": str(secret_file)},
                },
            },
        }
    )
    redact.register_environment(env)
    text = "ora-login-value-1 wallet-pin-value-2 broker-login-value-3 file-value-4"
    assert redact.redact(text) == " ".join([redact.MASK] * 4)


# -- the session on Targets.sql ------------------------------------------------------------------


def test_live_sql_for_an_oracle_node_is_an_oracle_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIS_ORACLE_PASSWORD", "not-used-here")
    env = load_environment_file(HIS_ORACLE)
    session = LiveConnector().sql("his-dr", env.nodes["his-dr"])
    assert isinstance(session, ora.OracleSession)
    assert session.host == "his-dr" and session.label == "c##drctl@127.0.0.3:1521/his_dr as SYSDG"
    session.close()  # never opened: the connection is made at the first statement


def test_commands_on_an_oracle_node_run_as_its_oracle_os_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Targets.os_user is the Oracle home's owner for an Oracle node, as the tools use it: what
    plan shows for a command on the node's host is what runs (sudo -n -u oracle over SSH)."""
    monkeypatch.setenv("HIS_ORACLE_PASSWORD", "not-used-here")
    env = load_environment_file(HIS_ORACLE)
    targets = Targets(env, {"primary": "his-pri", "app": "app"})
    try:
        assert targets.os_user("primary") == env.nodes["his-pri"].oracle.os_user == "oracle"  # type: ignore[union-attr]
        shown = targets.describe("primary", ["test", "-d", "/u01"])
        assert shown.startswith("on his-pri: ") and "sudo -n -u oracle" in shown
        assert targets.os_user("app") is None  # no database: the login user
    finally:
        targets.close()


def test_a_wallet_goes_into_the_connect_arguments_and_its_password_is_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ORA_TEST_LOGIN", "Login-Pw-1")
    monkeypatch.setenv("ORA_TEST_WALLET", "Wallet-Pw-2")
    extra = f"      wallet_dir: {tmp_path}\n      wallet_password_env: ORA_TEST_WALLET\n"
    env = load_environment_file(write(tmp_path, ORACLE_ENV.format(extra=extra)))
    access = env.nodes["db1"].oracle
    assert access is not None
    arguments = ora.connect_arguments(access, "127.0.0.2:1521/his_pri", privileged=False)
    assert arguments["wallet_location"] == arguments["config_dir"] == str(tmp_path)
    assert arguments["wallet_password"] == "Wallet-Pw-2" and arguments["password"] == "Login-Pw-1"
    assert "mode" not in arguments
    redact.register_environment(env)
    assert "Wallet-Pw-2" not in redact.redact(f"wallet_password={arguments['wallet_password']}")


def test_no_password_at_all_is_a_refused_login_that_says_which_setting() -> None:
    """python-oracledb's thin mode refuses before any network (DPY-4001): the advice says a
    wallet's ewallet.pem is not a password."""
    with pytest.raises(AuthenticationFailed) as refused:
        ora.connect("127.0.0.1:9/x", user="c##drctl", password=None, side="source")
    message = refused.value.message
    assert "DPY-4001" in message and "password_env or password_file" in message
    assert "cannot connect to the source database (c##drctl@127.0.0.1:9/x)" in message


def test_a_node_without_a_database_section_has_no_sql() -> None:
    env = load_environment_file(HIS_ORACLE)
    with pytest.raises(InputError, match=r"no database section \(postgres: or oracle:\)"):
        Targets(env, {"app": "app"}).sql("app")


def test_a_missing_password_variable_is_bad_input_not_a_node_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HIS_ORACLE_PASSWORD", raising=False)
    env = load_environment_file(HIS_ORACLE)
    with pytest.raises(InputError, match="HIS_ORACLE_PASSWORD"):
        LiveConnector().sql("his-pri", env.nodes["his-pri"])


# -- errors: what they say and what to do ----------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_env(port: int, service: str = "his_pri") -> Environment:
    return Environment.model_validate(
        {
            "name": "ora-errors",
            "nodes": {
                "his-pri": {
                    "role": "primary",
                    "host": "127.0.0.1",
                    "port": port,
                    "oracle": {
                        "service": service,
                        "user": "c##drctl",
                        "password_env": "ORA_TEST_LOGIN",
                        "connect_timeout": 2,
                    },
                }
            },
        }
    )


def test_dpy_6005_from_a_real_refused_connection_names_the_node_and_the_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORA_TEST_LOGIN", "pw-never-shown")
    port = closed_port()
    env = node_env(port)
    session = ora.OracleSession.for_node("his-pri", env.nodes["his-pri"])
    with pytest.raises(ConnectionFailed) as caught:
        session.query("SELECT 1 FROM dual")
    text = str(caught.value)
    assert caught.value.host == "his-pri" and text.startswith("host his-pri: ")
    assert f"cannot connect to node his-pri (c##drctl@127.0.0.1:{port}/his_pri)" in text
    assert "DPY-6005" in text and "Connection refused" in text
    assert "no listener at that host:port" in text and "CONNECTION_ID" not in text
    assert "pw-never-shown" not in text


def standin(tmp_path: Path, password: str | None = "right-password") -> tuple[Environment, Any]:
    env = load_environment_file(HIS_ORACLE)
    state = StandinState.create(
        tmp_path / "oracle.json",
        {"his-pri": "his_pri", "his-dr": "his_dr"},
        primary="his-pri",
        password=password,
    )
    return env, StandinConnector(state, env)


def test_ora_01017_is_a_refused_login_that_says_check_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIS_ORACLE_PASSWORD", "wrong-password")
    env, connector = standin(tmp_path)
    with pytest.raises(AuthenticationFailed) as caught:
        connector.sql("his-pri", env.nodes["his-pri"]).query("SELECT open_mode FROM v$database")
    text = str(caught.value)
    assert "node his-pri" in text and "ORA-01017" in text
    assert "wrong user or password" in text and "password_env" in text and "wallet" in text
    assert "wrong-password" not in text


def test_ora_12514_when_the_instance_is_down_says_check_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIS_ORACLE_PASSWORD", "right-password")
    env, connector = standin(tmp_path)
    connector.state.abort("his-dr")
    with pytest.raises(ConnectionFailed) as caught:
        connector.sql("his-dr", env.nodes["his-dr"]).query("SELECT open_mode FROM v$database")
    text = str(caught.value)
    assert "node his-dr" in text and "DPY-6005" in text and "ORA-12514" in text
    assert "the listener does not know the service" in text and "lsnrctl services" in text


def test_ora_01034_when_the_service_is_registered_statically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIS_ORACLE_PASSWORD", "right-password")
    env, connector = standin(tmp_path)
    connector.state.set("his-dr", registration="static")
    connector.state.abort("his-dr")
    with pytest.raises(ConnectionFailed, match=r"ORA-01034.*the instance is not running"):
        connector.sql("his-dr", env.nodes["his-dr"]).query("SELECT open_mode FROM v$database")


def raising(exc: BaseException) -> Any:
    def connect(**arguments: Any) -> Any:
        raise exc

    return connect


def test_ora_12541_says_no_listener_at_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORA_TEST_LOGIN", "x-password")
    env = node_env(1521)
    session = ora.OracleSession.for_node(
        "his-pri",
        env.nodes["his-pri"],
        connect=raising(oracledb.OperationalError("ORA-12541: TNS:no listener")),
    )
    with pytest.raises(ConnectionFailed) as caught:
        session.query("SELECT 1 FROM dual")
    assert "ORA-12541" in str(caught.value) and "no listener at that host:port" in str(caught.value)
    assert "`lsnrctl status` on the host" in str(caught.value)


def test_dpy_6005_without_a_refusal_says_check_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORA_TEST_LOGIN", "x-password")
    env = node_env(1521)
    timed_out = oracledb.OperationalError(
        "DPY-6005: cannot connect to database (CONNECTION_ID=abc==).\ntimed out"
    )
    session = ora.OracleSession.for_node(
        "his-pri", env.nodes["his-pri"], connect=raising(timed_out)
    )
    with pytest.raises(ConnectionFailed) as caught:
        session.query("SELECT 1 FROM dual")
    text = str(caught.value)
    assert "DPY-6005: cannot connect to database. timed out" in text
    assert "check the network, the host and port, and any firewall" in text


def test_advice_picks_the_most_specific_code() -> None:
    wrapped = oracledb.OperationalError(
        "DPY-6005: cannot connect to database (CONNECTION_ID=x).\n"
        'DPY-6001: Service "his" is not registered with the listener at host "h" port 1521. '
        "(Similar to ORA-12514)"
    )
    assert ora.error_codes(wrapped) == ["DPY-6005", "DPY-6001", "ORA-12514"]
    assert "listener does not know the service" in ora.advice(wrapped)
    helped = oracledb.DatabaseError(
        "ORA-01017: invalid credential or not authorized; logon denied\n"
        "Help: https://docs.oracle.com/error-help/db/ora-01017/"
    )
    assert ora.describe_error(helped).startswith(
        "ORA-01017: invalid credential or not authorized; logon denied; wrong user or password"
    )
    assert ora.advice(oracledb.DatabaseError("ORA-00001: unique constraint violated")) == ""


class FlakyConnection:
    """A connection whose statements raise what they are told to, once each."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        self.autocommit = False
        self.call_timeout = 0
        self.closed = False

    def cursor(self) -> Any:
        conn = self

        class Cursor:
            arraysize = 1
            description: Any = None

            def execute(self, sql: str, binds: Any) -> None:
                if conn.errors:
                    raise conn.errors.pop(0)
                self.description = [("X",)]

            def fetchall(self) -> list[tuple[Any, ...]]:
                return [(1,)]

        return Cursor()

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("error", "ours"),
    [
        (oracledb.DatabaseError("ORA-00942: table or view does not exist"), CommandFailed),
        (oracledb.OperationalError("DPY-4024: call timeout of 3000 ms exceeded"), CommandTimeout),
        (oracledb.DatabaseError("ORA-01013: user requested cancel"), CommandTimeout),
    ],
)
def test_statement_errors_become_ours_naming_the_node(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, ours: type[Exception]
) -> None:
    monkeypatch.setenv("ORA_TEST_LOGIN", "x-password")
    conn = FlakyConnection([error])
    session = ora.OracleSession.for_node(
        "his-pri", node_env(1521).nodes["his-pri"], connect=lambda **_: conn
    )
    with pytest.raises(ours) as caught:
        session.query("SELECT x FROM t", {"a": 1}, timeout=3)
    assert caught.value.host == "his-pri" and "node his-pri" in str(caught.value)
    assert conn.call_timeout == 3000 and conn.autocommit is True


def test_a_lost_session_is_replaced_once_before_the_failure_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORA_TEST_LOGIN", "x-password")
    lost = oracledb.OperationalError("DPY-4011: the database or network closed the connection")
    opened: list[FlakyConnection] = []
    plan: list[list[BaseException]] = [[], []]  # two connections that work

    def connect(**_: Any) -> FlakyConnection:
        opened.append(FlakyConnection(plan.pop(0) if plan else []))
        return opened[-1]

    session = ora.OracleSession.for_node(
        "his-pri", node_env(1521).nodes["his-pri"], connect=connect
    )
    assert session.scalar("SELECT 1 FROM dual") == 1
    opened[0].errors.append(lost)
    assert session.scalar("SELECT 1 FROM dual") == 1  # on a fresh connection
    assert len(opened) == 2 and opened[0].closed
    # a fresh connection that is lost at once counts
    session.close()
    failing = FlakyConnection([lost])
    fresh = ora.OracleSession.for_node(
        "his-pri", node_env(1521).nodes["his-pri"], connect=lambda **_: failing
    )
    with pytest.raises(ConnectionFailed, match="lost node his-pri"):
        fresh.query("SELECT 1 FROM dual")


def test_the_fixtures_name_their_source_and_release() -> None:
    from tests.oracle_standin.database import FIXTURES

    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) >= 15
    for path in files:
        data = yaml.safe_load(path.read_text())
        assert data["release"] and data["sources"] and data["note"], path.name
        places = ("http://", "https://", "tests/fixtures/oracle/views/")
        assert all(s.startswith(places) for s in data["sources"]), path.name
        for scenario in data["scenarios"].values():
            if "recorded" in scenario:  # a published output, its source in its own header
                continue
            assert all(len(row) == len(data["columns"]) for row in scenario["rows"]), path.name


def test_the_module_docstrings_describe_the_oracle_section() -> None:
    from drills.model import environment

    doc = textwrap.dedent(environment.__doc__ or "")
    assert "oracle:" in doc and "1521" in doc
