"""``drctl env check``: can drctl reach and act on every node of an environment? Read only.

Per node, one line per question, each with a verdict:

- the host: reached (locally, or over SSH with the host key that matched known_hosts, its
  fingerprint), the user drctl is there, and whether commands as the database's owner work
  (``become`` without a password);
- the database: the server's version, its role, its replication state, and whether drctl's
  database user may do what the playbooks do (promote, checkpoint, rewind from it, write the
  canary schema);
- the application: its health URL answers.

An Oracle node (``engine: oracle``, an ``oracle:`` section) gets its own lines: the host as
above, commands as ``oracle.os_user``; its ORACLE_HOME and the tools drctl runs from it
(``bin/dgmgrl``, ``rman``, ``sqlplus``, ``expdp``, ``impdp``, executable as that user); the
credential the section names (password_env / password_file / wallet_dir); the login through
python-oracledb in thin mode, its errors translated by ``drills.executors.oracle`` (ORA-01017,
ORA-12514, DPY-6005... with what to do); and the role, open mode and DB_UNIQUE_NAME read from
``V$DATABASE``.

Nothing is changed on any node: every command and query only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drills.engine.targets import Connector, Targets
from drills.executors.host import HostExecutor
from drills.model.environment import Environment, Node, OracleAccess
from drills.model.errors import DrillError

Verdict = Literal["ok", "problem", "note"]


@dataclass(frozen=True)
class Finding:
    node: str
    item: str
    verdict: Verdict
    detail: str


PRIVILEGES_SQL = """
select r.rolsuper, r.rolreplication,
       has_function_privilege('pg_promote(boolean, integer)', 'execute'),
       exists (select 1 from pg_roles c where c.rolname = 'pg_checkpoint')
         and pg_has_role('pg_checkpoint', 'member'),
       has_database_privilege(current_database(), 'create'),
       pg_has_role('pg_monitor', 'member')
from pg_roles r where r.rolname = current_user
"""


def _host_findings(name: str, node: Node, targets: Targets) -> list[Finding]:
    found: list[Finding] = []
    try:
        host = targets.host_of(name)
        who = host.identity()
    except DrillError as exc:
        how = "SSH" if node.executor == "ssh" else "the local host"
        return [Finding(name, "host", "problem", f"not reached through {how}: {exc.message}")]
    reached = f"{who.address} as {who.user} (hostname {who.hostname})"
    if who.host_key_fingerprint:
        reached += f"; host key {who.host_key_fingerprint} matched {who.known_hosts}"
    found.append(Finding(name, "host", "ok", reached))
    owner = node.postgres.os_user if node.postgres else None
    if node.oracle is not None:
        owner = node.oracle.os_user
    if owner and owner != who.user:
        try:
            result = host.run(["id", "-un"], user=owner, timeout=15)
            became = result.stdout.strip()
            verdict: Verdict = "ok" if became == owner else "problem"
            found.append(Finding(name, f"run as {owner}", verdict, f"commands run as {became}"))
        except DrillError as exc:
            found.append(Finding(name, f"run as {owner}", "problem", exc.message))
    if node.postgres is not None:
        pg = node.postgres
        try:
            tools = host.run(
                [
                    "sh",
                    "-c",
                    'test -x "$1/pg_ctl" && test -x "$1/pg_rewind" && echo yes',
                    "sh",
                    pg.bin_dir,
                ],
                user=owner,
                timeout=15,
                check=False,
            )
            has_data = host.exists(f"{pg.data_dir}/PG_VERSION", user=owner)
        except DrillError as exc:
            found.append(Finding(name, "server files", "problem", exc.message))
        else:
            problems = []
            if tools.stdout.strip() != "yes":
                problems.append(f"no pg_ctl/pg_rewind in {pg.bin_dir}")
            if not has_data:
                problems.append(f"no data directory at {pg.data_dir}")
            found.append(
                Finding(
                    name,
                    "server files",
                    "problem" if problems else "ok",
                    "; ".join(problems) or f"{pg.bin_dir} and {pg.data_dir} are there",
                )
            )
    if node.oracle is not None:
        found.append(_oracle_home_finding(name, node.oracle, host, node.oracle.os_user))
    return found


# The tools drctl runs from $ORACLE_HOME/bin (drills.engines.oracle.tools).
ORACLE_TOOLS = ("dgmgrl", "rman", "sqlplus", "expdp", "impdp")
# $1 the home; then the tools. Prints "no home" or "missing <tool>" lines, then "checked".
_ORACLE_HOME_SCRIPT = (
    'home=$1; shift; if [ ! -d "$home" ]; then echo "no home"; else '
    'for t in "$@"; do [ -x "$home/bin/$t" ] || echo "missing $t"; done; fi; echo checked'
)


def _oracle_home_finding(
    name: str, access: OracleAccess, host: HostExecutor, owner: str
) -> Finding:
    item = "oracle home"
    if not access.oracle_home:
        return Finding(
            name,
            item,
            "problem",
            "no oracle.oracle_home: dgmgrl, rman, sqlplus and Data Pump run from "
            "$ORACLE_HOME/bin on this host; set it",
        )
    home = access.oracle_home.rstrip("/") or "/"
    where = f"on {host.address} as {owner}"
    try:
        result = host.run(
            ["sh", "-c", _ORACLE_HOME_SCRIPT, "sh", home, *ORACLE_TOOLS],
            user=owner,
            timeout=15,
            check=False,
        )
    except DrillError as exc:
        return Finding(name, item, "problem", f"{home} {where}: {exc.message}")
    lines = result.stdout.split("\n")
    if "checked" not in (line.strip() for line in lines):
        said = (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
        return Finding(name, item, "problem", f"cannot look at {home} {where}: {said}")
    if "no home" in lines:
        return Finding(
            name, item, "problem", f"ORACLE_HOME {home} does not exist {where} (oracle_home)"
        )
    missing = [line.split(" ", 1)[1] for line in lines if line.startswith("missing ")]
    if missing:
        paths = ", ".join(f"{home}/bin/{t}" for t in missing)
        return Finding(name, item, "problem", f"not executable {where}: {paths}")
    sid = f"; ORACLE_SID {access.oracle_sid}" if access.oracle_sid else "; no oracle_sid set"
    tools = "/".join(ORACLE_TOOLS)
    return Finding(
        name,
        item,
        "ok" if access.oracle_sid else "problem",
        f"{home}/bin has {tools}, executable {where}{sid}",
    )


def _oracle_credential(access: OracleAccess) -> str:
    """Which credential the section names (never its value)."""
    if access.password_env:
        named = f"password from ${access.password_env}"
    elif access.password_file:
        named = f"password from {access.password_file}"
    else:
        named = "no password"
    if access.wallet_dir:
        named += f", wallet {access.wallet_dir}"
        if access.wallet_password_env:
            named += f" (its password from ${access.wallet_password_env})"
    return named


# Which role a V$DATABASE.DATABASE_ROLE plays in the environment's terms.
_ORACLE_ROLES = {
    "PRIMARY": "primary",
    "PHYSICAL STANDBY": "standby",
    "LOGICAL STANDBY": "standby",
    "SNAPSHOT STANDBY": "standby",
}


def _oracle_findings(name: str, node: Node, targets: Targets) -> list[Finding]:
    access = node.oracle
    assert access is not None
    dsn = access.dsn(node.host, node.port)
    privilege = f" as {access.privilege.upper()}" if access.privilege else ""
    login = f"{access.user}@{dsn}{privilege} ({_oracle_credential(access)})"
    try:
        rows = targets.sql_of(name).query(
            "SELECT database_role, open_mode, db_unique_name FROM v$database", timeout=10
        )
    except DrillError as exc:
        return [Finding(name, "database", "problem", f"{login}: {exc.message}")]
    if not rows:
        return [Finding(name, "database", "problem", f"{login}: V$DATABASE returned no row")]
    database_role, open_mode, unique = (str(v) if v is not None else "?" for v in rows[0])
    found = [Finding(name, "database", "ok", f"logged in: {login}")]
    seen = _ORACLE_ROLES.get(database_role.upper(), database_role.lower())
    configured = node.role in ("primary", "standby")
    found.append(
        Finding(
            name,
            "role",
            "ok" if seen == node.role or not configured else "note",
            f"{database_role}, {open_mode} (configured {node.role})",
        )
    )
    if access.db_unique_name and unique.lower() != access.db_unique_name.lower():
        found.append(
            Finding(
                name,
                "db_unique_name",
                "problem",
                f"the database says {unique}, the section says {access.db_unique_name}: the "
                "broker's commands name it by DB_UNIQUE_NAME",
            )
        )
    return found


def _database_findings(name: str, node: Node, targets: Targets) -> list[Finding]:
    if node.oracle is not None:
        return _oracle_findings(name, node, targets)
    if node.postgres is None:
        return []
    found: list[Finding] = []
    try:
        sql = targets.sql_of(name)
        version = sql.scalar("show server_version", timeout=5)
        in_recovery = sql.scalar("select pg_is_in_recovery()", timeout=5)
    except DrillError as exc:
        return [Finding(name, "database", "problem", f"{node.endpoint}: {exc.message}")]
    role = "standby" if in_recovery else "primary"
    found.append(Finding(name, "database", "ok", f"PostgreSQL {version} at {node.endpoint}"))
    found.append(
        Finding(
            name,
            "role",
            "ok" if role == node.role or node.role not in ("primary", "standby") else "note",
            f"{role} (configured {node.role})",
        )
    )
    try:
        if in_recovery:
            rows = sql.query(
                "select status, sender_host, sender_port from pg_stat_wal_receiver", timeout=5
            )
            if rows:
                status, sender, port = rows[0]
                found.append(
                    Finding(
                        name,
                        "replication",
                        "ok" if status == "streaming" else "problem",
                        f"{status} from {sender}:{port}",
                    )
                )
            else:
                found.append(Finding(name, "replication", "problem", "no WAL receiver"))
        else:
            rows = sql.query(
                "select application_name, client_addr::text, state, sync_state"
                " from pg_stat_replication",
                timeout=5,
            )
            standbys = ", ".join(f"{a or '?'} ({c}) {s}/{y}" for a, c, s, y in rows)
            found.append(
                Finding(
                    name,
                    "replication",
                    "ok" if rows else "note",
                    standbys or "no standby streams from it",
                )
            )
        row = sql.query(PRIVILEGES_SQL, timeout=5)
    except DrillError as exc:
        found.append(Finding(name, "replication", "problem", exc.message))
        return found
    superuser, replication, promote, checkpoint, create, _monitor = row[0] if row else (False,) * 6
    if superuser:
        found.append(Finding(name, "privileges", "ok", f"{node.postgres.user} is a superuser"))
    else:
        missing = [
            what
            for what, has in (
                ("EXECUTE on pg_promote", promote),
                ("pg_checkpoint (CHECKPOINT before pg_rewind)", checkpoint),
                ("REPLICATION (pg_basebackup)", replication),
                ("CREATE on the database (the drctl canary schema)", create),
            )
            if not has
        ]
        found.append(
            Finding(
                name,
                "privileges",
                "problem" if missing else "ok",
                f"{node.postgres.user} lacks: " + "; ".join(missing)
                if missing
                else f"{node.postgres.user} may promote, checkpoint, replicate and create",
            )
        )
    return found


def _app_findings(name: str, node: Node, targets: Targets) -> list[Finding]:
    if node.http is None:
        return []
    url = node.http.base_url.rstrip("/") + node.http.health_path
    try:
        response = targets.view({name: name}).http(name).request("GET", node.http.health_path)
    except DrillError as exc:
        return [Finding(name, "application", "problem", f"{url}: {exc.message}")]
    status = int(response.status)
    return [
        Finding(
            name,
            "application",
            "ok" if status == 200 else "problem",
            f"{url} answered HTTP {status} in {response.seconds * 1000:.0f} ms",
        )
    ]


def check_environment(env: Environment, connector: Connector | None = None) -> list[Finding]:
    """Every finding for every node, in the environment's order. Closes what it opened."""
    targets = Targets(env, {}, connector)
    findings: list[Finding] = []
    try:
        for name, node in env.nodes.items():
            if node.executor == "ssh" or node.postgres is not None or node.oracle is not None:
                findings += _host_findings(name, node, targets)
            findings += _database_findings(name, node, targets)
            findings += _app_findings(name, node, targets)
    finally:
        targets.close()
    return findings
