"""``drctl env check``: can drctl reach and act on every node of an environment? Read only.

Per node, one line per question, each with a verdict:

- the host: reached (locally, or over SSH with the host key that matched known_hosts, its
  fingerprint), the user drctl is there, and whether commands as the database's owner work
  (``become`` without a password);
- the database: the server's version, its role, its replication state, and whether drctl's
  database user may do what the playbooks do (promote, checkpoint, rewind from it, write the
  canary schema);
- the application: its health URL answers.

Nothing is changed on any node: every command and query only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drills.engine.targets import Connector, Targets
from drills.model.environment import Environment, Node
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
    return found


def _database_findings(name: str, node: Node, targets: Targets) -> list[Finding]:
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
            if node.executor == "ssh" or node.postgres is not None:
                findings += _host_findings(name, node, targets)
            findings += _database_findings(name, node, targets)
            findings += _app_findings(name, node, targets)
    finally:
        targets.close()
    return findings
