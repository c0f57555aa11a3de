"""Oracle's own tools on the database host: DGMGRL, RMAN, SQL*Plus, expdp and impdp.

Every tool runs on the host of the node a step names, through that node's host executor (local,
or SSH), as the Oracle OS user (``oracle.os_user``, default ``oracle``), found at
``$ORACLE_HOME/bin/<tool>`` with the node's ``oracle_home`` and ``oracle_sid``. The environment
(``ORACLE_HOME``, ``ORACLE_SID``, ``NLS_LANG=AMERICAN_AMERICA.AL32UTF8`` so that messages are the
English ones :mod:`~drills.engines.oracle.parsers` reads, ``NLS_DATE_FORMAT``) is given to the
executor, which passes it on the command's standard input over SSH, never on its command line.
Commands go on standard input too (``dgmgrl -silent``, ``rman``, ``sqlplus -S -L / as
sysdba``), and so does DGMGRL's ``CONNECT`` with a password from ``dgmgrl_password_env``: no
secret is ever an argument, and :func:`describe_tool` shows it masked.

Before a tool runs, its home is checked on the host (:func:`tool_home`): a missing ORACLE_HOME
directory, or a tool missing from its ``bin``, is an error that names the node, the host and the
path, raised before anything runs, so nothing is changed.

This module holds what every tool shares and the Data Guard broker's actions (``oracle.dg_*``)
and those of SQL*Plus (``oracle.shutdown_abort``, ``oracle.startup``); RMAN's are in
:mod:`~drills.engines.oracle.rman`, Data Pump's in :mod:`~drills.engines.oracle.datapump`. The
checks that ask a tool on the host rather than a view through the session are named for the
tool: ``dgmgrl.validate`` (the broker validates the standby as ready), ``dgmgrl.configuration``
(SHOW CONFIGURATION's status), ``dgmgrl.primary``, ``sqlplus.instance_down``,
``sqlplus.schema_frozen``; the ``oracle.*`` checks read views (``verify/oracle*.py``).
:func:`tool_actions` and :func:`tool_checks` list them all for the engine's ``register``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from drills.engine.catalogue import Params
from drills.engines.oracle import parsers
from drills.executors.host import CommandResult, HostExecutor
from drills.model import redact
from drills.model.environment import Node, OracleAccess, read_secret_env
from drills.model.errors import CommandFailed, InputError

if TYPE_CHECKING:
    from drills.engine.targets import Targets

ENGINE = "oracle"
Tool = Literal["dgmgrl", "rman", "sqlplus", "expdp", "impdp"]
EXCERPT = 1500  # characters of a tool's output kept in an error message
NLS_LANG = "AMERICAN_AMERICA.AL32UTF8"
NLS_DATE_FORMAT = "YYYY-MM-DD HH24:MI:SS"
MASK = "********"
# "ORA-01017: invalid username/password" and its kin, as the tool printed them, say what to fix.
LOGIN_ADVICE = {
    "dgmgrl": "check the node's dgmgrl_connect and dgmgrl_password_env (or the wallet for "
    "'/@alias'; '/' needs the OS user in the OSDBA/OSDGDBA group)",
    "sqlplus": "'/ as sysdba' needs the Oracle OS user in the OSDBA group on the host",
    "rman": "'target /' needs the Oracle OS user in the OSDBA/OSBACKUPDBA group on the host",
    "expdp": "check the node's user and password_env/password_file",
    "impdp": "check the node's user and password_env/password_file",
}


class ToolFailed(CommandFailed):
    """A tool ran and reported a fault; ``data`` keeps what was parsed, for the step's record."""

    def __init__(self, message: str, *, host: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message, returncode=1, host=host)
        self.data: dict[str, Any] = dict(data or {})


# -- the node, its home and the tool's environment -----------------------------------------------


@dataclass(frozen=True)
class OracleNode:
    """A role's node as the tools need it: its name, section, host executor and home."""

    name: str
    node: Node
    access: OracleAccess
    host: HostExecutor

    @property
    def os_user(self) -> str:
        return self.access.os_user

    @property
    def home(self) -> str:
        if not self.access.oracle_home:
            raise InputError(
                f"node {self.name} has no oracle.oracle_home: drctl runs dgmgrl, rman, sqlplus "
                "and Data Pump from $ORACLE_HOME/bin on the node's host; set it to the Oracle "
                "home there (e.g. /u01/app/oracle/product/19.0.0/dbhome_1)",
                host=self.name,
            )
        return self.access.oracle_home.rstrip("/") or "/"

    @property
    def sid(self) -> str:
        if not self.access.oracle_sid:
            raise InputError(
                f"node {self.name} has no oracle.oracle_sid: the tools log in to the local "
                "instance ('/ as sysdba', 'target /') by its ORACLE_SID; set it",
                host=self.name,
            )
        return self.access.oracle_sid

    @property
    def unique_name(self) -> str:
        """The node's DB_UNIQUE_NAME: how the broker names it (oracle.db_unique_name)."""
        if not self.access.db_unique_name:
            raise InputError(
                f"node {self.name} has no oracle.db_unique_name: the broker's commands name "
                "databases by DB_UNIQUE_NAME; set it",
                host=self.name,
            )
        return self.access.db_unique_name

    def tool(self, tool: str) -> str:
        return posixpath.join(self.home, "bin", tool)

    def env(self, sid: str | None = None) -> dict[str, str]:
        """The environment a tool runs in (given on stdin over SSH, never as arguments)."""
        home = self.home
        return {
            "ORACLE_HOME": home,
            "ORACLE_SID": sid or self.sid,
            "NLS_LANG": NLS_LANG,
            "NLS_DATE_FORMAT": NLS_DATE_FORMAT,
            "PATH": f"{home}/bin:/usr/local/bin:/usr/bin:/bin",
            "LD_LIBRARY_PATH": f"{home}/lib",
        }

    def shown_env(self, sid: str | None = None) -> str:
        env = self.env(sid)
        return " ".join(f"{k}={env[k]}" for k in ("ORACLE_HOME", "ORACLE_SID", "NLS_LANG"))


def oracle_node(targets: Targets, role: str) -> OracleNode:
    """The role's node, which must have an ``oracle:`` section."""
    name, node = targets.node(role)
    if node.oracle is None:
        raise InputError(
            f"node {name} (role {role}) has no oracle section: this step runs Oracle's tools",
            host=name,
        )
    return OracleNode(name, node, node.oracle, targets.host(role))


# One round trip: 3 when the home is missing, 4 when the tool is not an executable in bin.
_HOME_SCRIPT = 'test -d "$1" || exit 3; test -f "$1/bin/$2" && test -x "$1/bin/$2" || exit 4'


def tool_home(on: OracleNode, tool: str) -> str:
    """Check on the node's host, as the Oracle OS user, that ``$ORACLE_HOME/bin/<tool>`` is
    there; return its path. A missing home or tool is an ``InputError`` naming the node, the
    host and the path: raised before the tool runs, so nothing is changed."""
    home = on.home
    result = on.host.run(
        ["sh", "-c", _HOME_SCRIPT, "sh", home, tool], user=on.os_user, timeout=15, check=False
    )
    where = f"on the host of node {on.name} ({on.host.address}, as {on.os_user})"
    if result.returncode == 3:
        raise InputError(
            f"node {on.name}: ORACLE_HOME {home} does not exist {where}; set the node's "
            "oracle.oracle_home to its Oracle home; nothing was run",
            host=on.name,
        )
    if result.returncode == 4:
        raise InputError(
            f"node {on.name}: {on.tool(tool)} is not there or not executable {where}; is "
            f"{home} the Oracle home of this database? nothing was run",
            host=on.name,
        )
    if result.returncode != 0:
        raise CommandFailed(
            f"node {on.name}: cannot check {home} {where}: {result.output[-300:]}",
            returncode=result.returncode,
            host=on.name,
        )
    return on.tool(tool)


@dataclass(frozen=True)
class ToolRun:
    """One tool's run: what was run (described, secrets masked), its exit code and output."""

    tool: str
    node: str
    described: str
    returncode: int
    output: str
    seconds: float

    def excerpt(self, limit: int = EXCERPT) -> str:
        return self.output[-limit:]


def run_tool(
    on: OracleNode,
    tool: Tool,
    args: list[str],
    script: str,
    *,
    timeout: float,
    sid: str | None = None,
    secrets: tuple[str, ...] = (),
) -> ToolRun:
    """Run one tool with ``script`` on its standard input, as the Oracle OS user with the
    node's environment. The exit code is not judged here: the caller parses the output."""
    path = tool_home(on, tool)
    for secret in secrets:
        redact.register(secret)
    argv = [path, *args]
    result: CommandResult = on.host.run(
        argv,
        user=on.os_user,
        env=on.env(sid),
        input=script,
        timeout=timeout,
        check=False,
    )
    return ToolRun(
        tool,
        on.name,
        on.host.describe(argv, on.os_user),
        result.returncode,
        (result.stdout + ("\n" + result.stderr if result.stderr.strip() else "")).strip(),
        result.seconds,
    )


def describe_tool(
    targets: Targets,
    role: str,
    tool: Tool,
    args: list[str],
    script: str,
    *,
    sid: str | None = None,
) -> list[str]:
    """What ``run_tool`` would run, for ``drctl plan``: the host, the user, the command line,
    the environment and every line given on its standard input (passwords masked)."""
    on = oracle_node(targets, role)
    argv = [on.tool(tool), *args]
    lines = [
        targets.describe(role, argv, user=on.os_user),
        f"  env (on stdin): {on.shown_env(sid)}",
    ]
    lines += [f"  {tool}> {line}" for line in script.strip().splitlines() if line.strip()]
    return lines


def tool_failed(
    run: ToolRun, what: str, errors: tuple[parsers.OracleError, ...], data: dict[str, Any]
) -> ToolFailed:
    """One wording for a tool that reported a fault: which node, what, the codes, the output."""
    refused = parsers.login_refused(run.output)
    codes = "; ".join(str(e) for e in errors[:6]) or f"exit code {run.returncode}"
    message = f"node {run.node}: {run.tool} {what} failed: {codes}"
    if refused is not None:
        message = (
            f"node {run.node}: {run.tool} could not log in ({refused}); "
            f"{LOGIN_ADVICE.get(run.tool, '')}; nothing was changed"
        )
    tail = run.excerpt(600).strip()
    if tail:
        message += f"\n--- {run.tool} printed (last lines) ---\n{tail}"
    return ToolFailed(
        message,
        host=run.node,
        data={
            **data,
            "tool": run.tool,
            "errors": [str(e) for e in errors],
            "login_refused": str(refused) if refused else None,
        },
    )


# -- DGMGRL --------------------------------------------------------------------------------------


def dgmgrl_login(on: OracleNode) -> tuple[str, str, tuple[str, ...]]:
    """The ``CONNECT`` line for DGMGRL (real, shown, secrets) from ``dgmgrl_connect``:
    ``/`` (OS authentication, the default), ``/@alias`` (a wallet), or ``user@alias`` with the
    password from ``dgmgrl_password_env``."""
    connect = (on.access.dgmgrl_connect or "/").strip()
    if connect.startswith("/"):
        return f"CONNECT {connect}", f"CONNECT {connect}", ()
    user, _, alias = connect.partition("@")
    variable = on.access.dgmgrl_password_env
    if not variable:
        raise InputError(
            f"node {on.name}: dgmgrl_connect {connect!r} needs dgmgrl_password_env",
            host=on.name,
        )
    password = read_secret_env(variable, f"the dgmgrl password of node {on.name}")
    if '"' in password or "\n" in password:
        raise InputError(
            f"node {on.name}: the password in {variable} holds a double quote or a newline, "
            "which dgmgrl's CONNECT cannot take; use a wallet ('/@alias')",
            host=on.name,
        )
    at = f"@{alias}" if alias else ""
    return (f'CONNECT {user}/"{password}"{at}', f"CONNECT {user}/{MASK}{at}", (password,))


def dgmgrl_script(login: str, *commands: str) -> str:
    body = "".join(f"{c.rstrip(';')};\n" for c in commands)
    return f"{login}\n{body}EXIT;\n"


def dgmgrl(on: OracleNode, *commands: str, timeout: float) -> ToolRun:
    login, _shown, secrets = dgmgrl_login(on)
    return run_tool(
        on,
        "dgmgrl",
        ["-silent"],
        dgmgrl_script(login, *commands),
        timeout=timeout,
        secrets=secrets,
    )


def describe_dgmgrl(targets: Targets, role: str, *commands: str) -> list[str]:
    on = oracle_node(targets, role)
    connect = (on.access.dgmgrl_connect or "/").strip()
    if connect.startswith("/"):
        shown = f"CONNECT {connect}"
    else:
        user, _, alias = connect.partition("@")
        shown = f"CONNECT {user}/{MASK}" + (f"@{alias}" if alias else "")
        shown += f"  (password from ${on.access.dgmgrl_password_env})"
    return describe_tool(targets, role, "dgmgrl", ["-silent"], dgmgrl_script(shown, *commands))


def login_checked(run: ToolRun, what: str) -> None:
    refused = parsers.login_refused(run.output)
    if refused is not None:
        raise tool_failed(run, what, (refused,), {})


class NoParams(Params):
    pass


# -- SQL*Plus on the host ------------------------------------------------------------------------

SQLPLUS_ARGS = ["-S", "-L", "/", "as", "sysdba"]


def sqlplus_script(*statements: str) -> str:
    return "WHENEVER OSERROR EXIT FAILURE\n" + "".join(f"{s}\n" for s in statements) + "EXIT\n"


def sqlplus(on: OracleNode, *statements: str, timeout: float, sid: str | None = None) -> ToolRun:
    return run_tool(
        on, "sqlplus", SQLPLUS_ARGS, sqlplus_script(*statements), timeout=timeout, sid=sid
    )


def describe_sqlplus(
    targets: Targets, role: str, *statements: str, sid: str | None = None
) -> list[str]:
    return describe_tool(
        targets, role, "sqlplus", SQLPLUS_ARGS, sqlplus_script(*statements), sid=sid
    )


def sql_checked(run: ToolRun, what: str) -> parsers.SqlplusRun:
    parsed = parsers.parse_sqlplus(run.output)
    bad = [e for e in parsed.errors if e.prefix in ("ORA", "SP2") and e.code != "ORA-01109"]
    if parsed.login_refused or bad or run.returncode != 0:
        raise tool_failed(run, what, tuple(bad) or parsed.errors, {"sqlplus": parsed.as_dict()})
    return parsed


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


INSTANCE_SQL = "SELECT 'drctl-instance '||status FROM v$instance;"


def instance_state(on: OracleNode, *, timeout: float = 30, sid: str | None = None) -> str:
    """'down' (ORA-01034, an idle instance), or V$INSTANCE.STATUS (OPEN, MOUNTED, STARTED)."""
    run = sqlplus(
        on, "SET HEADING OFF FEEDBACK OFF PAGESIZE 0", INSTANCE_SQL, timeout=timeout, sid=sid
    )
    parsed = parsers.parse_sqlplus(run.output)
    if parsed.login_refused:
        raise tool_failed(run, "SELECT status FROM v$instance", (parsed.login_refused,), {})
    if parsed.not_available or parsed.idle_instance:
        return "down"
    found = re.search(r"drctl-instance (\w+)", run.output)
    if found:
        return found.group(1)
    raise tool_failed(run, "SELECT status FROM v$instance", parsed.errors, {})
