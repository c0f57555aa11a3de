"""Every Oracle playbook end to end on the stand-in, through the runner, the SSH executor, the
record and the report.

The world: two real OpenSSH sites on loopback (127.0.0.2 for his-pri, 127.0.0.3 for his-dr; the
test OS user plays ``oracle``), each with a fake ORACLE_HOME whose ``bin`` holds the command-line
stand-ins (``tests/oracle_standin/bin``: dgmgrl, rman, sqlplus, expdp, impdp), all reading and
changing one ``StandinState`` file; SQL goes to the stand-in database through the real
``OracleSession`` (``StandinConnector``); the HIS is a small fake application that registers
patients on whichever database is primary. drctl runs the tools over SSH exactly as it would on
a database host: ``$ORACLE_HOME/bin/<tool>``, the environment on stdin, commands on stdin.

The tables' reconciliation (restore test, migration) is the reconciliation engine of
``verify.reconcile`` on in-memory sessions over the stand-in's tables (``MemorySession``): no
Oracle database answers the Oracle reconciliation SQL here (that SQL runs in the docker-marked
tests of test_reconcile.py, against Oracle Database Free).

Each refusal is a test that asserts the stand-in's state is unchanged, and a password planted in
the environment is looked for, and not found, in every journal, record, report and log line.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from drills.engine.catalogue import Catalogue, build_catalogue
from drills.engine.human import write_ack_file
from drills.engine.loader import load_playbook
from drills.engine.runner import Runner
from drills.engine.targets import LiveConnector
from drills.engines.oracle.canary import OracleInstruments
from drills.engines.oracle.restore import STATE_KEY
from drills.engines.postgres.runstate import load_state
from drills.executors.host import HostExecutor
from drills.executors.http import HttpResponse
from drills.model.environment import Environment, Node
from drills.model.record import Record
from drills.model.request import RunRequest
from drills.records.store import RecordStore
from drills.reports import render_report
from tests.oracle_standin.bin import install_home, set_tools, share_state, tools_state, write_backup
from tests.oracle_standin.connector import StandinConnector
from tests.oracle_standin.database import DRCTL_TABLES
from tests.oracle_standin.state import PHYSICAL, PRIMARY, StandinState
from tests.sshd_fixtures import (
    BASTION_ADDRESS,
    NODE_ADDRESS,
    TEST_USER,
    SshLab,
    needs_sshd,
    ssh_lab,  # noqa: F401  (a fixture)
    stop_and_check,
)
from verify.reconcile.model import (
    Column,
    KeyRange,
    LeafRow,
    Stat,
    TableMeta,
    TablePlan,
    TableRef,
)

pytestmark = needs_sshd

REPO = Path(__file__).resolve().parents[1]
PLAYBOOKS = REPO / "playbooks"
PASSWORD = "Planted-Oracle-Pw-9917"  # the databases' password, planted: it must never show
COLUMNS = {
    "his.patient": ("id", "name", "born"),
    "his.registration": ("id", "patient_name", "department"),
}


# -- the sites -----------------------------------------------------------------------------------


@dataclass
class Sites:
    lab: SshLab
    addresses: dict[str, tuple[str, int]]  # node -> (address, sshd port)
    known_hosts: Path


@pytest.fixture(scope="module")
def sites(ssh_lab: SshLab) -> Iterator[Sites]:  # noqa: F811
    site_a = ssh_lab.site(NODE_ADDRESS, name="oracle-site-a")
    site_b = ssh_lab.site(BASTION_ADDRESS, name="oracle-site-b")
    known = ssh_lab.known_hosts(site_a, site_b, name="known_hosts-oracle")
    yield Sites(
        ssh_lab,
        {"his-pri": (site_a.address, site_a.port), "his-dr": (site_b.address, site_b.port)},
        known,
    )
    stop_and_check(site_a)
    stop_and_check(site_b)


# -- the world of one test -----------------------------------------------------------------------


@dataclass
class World:
    state: StandinState
    env: Environment
    root: Path
    homes: dict[str, Path]
    backups: Path  # the backup directory on the restore host (his-dr's site)
    dpdump: dict[str, Path]
    tmp: Path

    def roles(self) -> dict[str, str]:
        return self.state.roles()

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        found = tools_state(self.state).get("calls", [])
        return [c for c in found if tool is None or c["tool"] == tool]

    def commands(self, tool: str) -> str:
        return "\n".join(c["stdin"] for c in self.calls(tool))


def oracle_section(node: str, unique: str, home: Path, **changes: Any) -> dict[str, Any]:
    section = {
        "service": unique,
        "user": "c##drctl",
        "password_env": "HIS_ORACLE_PASSWORD",
        "privilege": "sysdg",
        "os_user": TEST_USER,
        "oracle_home": str(home),
        "oracle_sid": "HIS",
        "db_unique_name": unique,
        "dgmgrl_connect": f"c##drctl@{unique}",
        "dgmgrl_password_env": "HIS_DGMGRL_PASSWORD",
        "primary_service": "his_rw",
    }
    section.update(changes)
    return section


def make_world(
    sites: Sites,
    tmp_path: Path,
    *,
    nodes: dict[str, str] | None = None,
    roles: dict[str, str] | None = None,
    oracle: dict[str, dict[str, Any]] | None = None,
    tools: dict[str, tuple[str, ...]] | None = None,
) -> World:
    """Stand-in databases his-pri (primary) and his-dr (standby), each on its own SSH site."""
    nodes = nodes or {"his-pri": "his_pri", "his-dr": "his_dr"}
    names = list(nodes)
    roles = roles or {names[0]: "primary", names[1]: "standby"}
    root = sites.lab.directory / f"oracle-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    state = StandinState.create(
        root / "state" / "oracle.json", nodes, primary=names[0], password=PASSWORD
    )
    share_state(state, TEST_USER)
    for name in names:
        state.set(name, **{"NAME": "HIS"})  # V$DATABASE.NAME
    homes: dict[str, Path] = {}
    dpdump: dict[str, Path] = {}
    sections: dict[str, Any] = {}
    site_of = dict(zip(names, sites.addresses.values(), strict=True))
    for name, unique in nodes.items():
        dpdump[name] = root / f"dpdump-{name}"
        homes[name] = install_home(
            root / f"home-{name}",
            node=name,
            sid="HIS",
            state=state,
            directories={"DRCTL_DP": str(dpdump[name])},
            owner=TEST_USER,
            **({"tools": tools[name]} if tools and name in tools else {}),
        )
        address, port = site_of[name]
        sections[name] = {
            "role": roles[name],
            "host": address,
            "port": 1521,
            "executor": "ssh",
            "ssh": {
                "user": TEST_USER,
                "port": port,
                "key_file": str(sites.lab.key),
                "known_hosts": str(sites.known_hosts),
                "use_agent": False,
                "connect_timeout": 5,
            },
            "oracle": oracle_section(name, unique, homes[name], **(oracle or {}).get(name, {})),
        }
    sections["app"] = {
        "role": "app",
        "host": "127.0.0.4",
        "port": 8080,
        "http": {"base_url": "http://127.0.0.4:8080"},
    }
    env = Environment.model_validate({"name": f"standin-{root.name}", "nodes": sections})
    backups = root / "backups"
    backups.mkdir(mode=0o777)
    for table in COLUMNS:
        state.create_table(names[0], table)
    for i in range(1, 41):
        state.write(
            names[0],
            "his.patient",
            {"id": i, "name": f"患者{i}", "born": f"1990-01-{i % 28 + 1:02d}"},
        )
    world = World(state, env, root, homes, backups, dpdump, tmp_path)
    return world


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIS_ORACLE_PASSWORD", PASSWORD)
    monkeypatch.setenv("HIS_DGMGRL_PASSWORD", PASSWORD)


@pytest.fixture
def world(sites: Sites, tmp_path: Path, secrets: None) -> Iterator[World]:
    made = make_world(sites, tmp_path)
    yield made
    shutil.rmtree(made.root, ignore_errors=True)


# -- the application and the reconciliation sessions --------------------------------------------


class StandinHis:
    """The HIS: registers patients on whichever database is primary, reads them back there."""

    host = "app"
    ids = itertools.count(1000)

    def __init__(self, state: StandinState) -> None:
        self.state = state

    def request(self, method: str, path: str, *, body: Any = None) -> HttpResponse:
        primary = self.state.primary()
        if path == "/health":
            return HttpResponse(200 if primary else 503, "{}", 0.001)
        if primary is None:
            return HttpResponse(503, '{"error": "no database takes writes"}', 0.001)
        if method == "POST":
            number = next(self.ids)
            self.state.write(primary, "his.registration", {"id": number, **(body or {})})
            return HttpResponse(201, json.dumps({"id": number}), 0.002)
        number = int(path.rsplit("/", 1)[1])
        found = [r for r in self.state.rows(primary, "his.registration") if r["id"] == number]
        if not found:
            return HttpResponse(404, "{}", 0.001)
        return HttpResponse(200, json.dumps(found[0], ensure_ascii=False), 0.002)

    def close(self) -> None:
        pass


def _hash(row: dict[str, Any], columns: Sequence[str]) -> int:
    text = "|".join(str(row.get(c)) for c in columns)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class MemorySession:
    """One side of a reconciliation over a stand-in database's tables (for the engine of
    verify.reconcile, which is what is being run): integer key ``ID``, a 64-bit row hash."""

    engine = "oracle"

    def __init__(self, side: Any, label: str, tables: dict[str, list[dict[str, Any]]]) -> None:
        self.side, self.label, self.tables = side, label, tables
        self.hash_mode: Any = "ora_hash"

    @staticmethod
    def fold(name: str) -> str:
        return name.upper()

    def probe(self) -> Any:
        return (1, "AL32UTF8", "AL16UTF16")

    @staticmethod
    def hash_mode_for(source: Any, target: Any) -> tuple[Any, str]:
        return "ora_hash", ""

    def _rows(self, ref: TableRef) -> list[dict[str, Any]]:
        return sorted(
            self.tables.get(f"{ref.schema}.{ref.name}".lower(), []), key=lambda r: int(r["id"])
        )

    def describe(self, ref: TableRef) -> TableMeta | None:
        key = f"{ref.schema}.{ref.name}".lower()
        if key not in self.tables:
            return None
        columns = tuple(
            Column(
                c.upper(),
                "NUMBER" if c == "id" else "VARCHAR2(200)",
                "NUMBER" if c == "id" else "VARCHAR2",
                integer=c == "id",
            )
            for c in COLUMNS[key]
        )
        return TableMeta(ref, "table", columns, ("ID",))

    def missing_schemas(self, schemas: list[str]) -> list[str]:
        have = {t.split(".", 1)[0].upper() for t in self.tables}
        return [s for s in schemas if s.upper() not in have]

    def list_tables(self, schemas: list[str] | None, exclude: Sequence[str]) -> list[TableRef]:
        refs = [TableRef(*t.upper().split(".", 1)) for t in self.tables if "." in t]
        return [r for r in refs if schemas is None or r.schema in schemas]

    def default_schema(self) -> str:
        return "C##DRCTL"

    def _columns(self, plan: TablePlan) -> list[str]:
        return [c.name.lower() for c in plan.columns]

    def count(self, plan: TablePlan) -> int:
        return len(self._rows(plan.on(self.side).ref))

    def whole(self, plan: TablePlan) -> Stat:
        rows = self._rows(plan.on(self.side).ref)
        return len(rows), sum(_hash(r, self._columns(plan)) for r in rows) % 2**64

    def int_bounds(self, plan: TablePlan) -> tuple[int, int] | None:
        ids = [int(r["id"]) for r in self._rows(plan.on(self.side).ref)]
        return (min(ids), max(ids)) if ids else None

    def sample_bounds(self, plan: TablePlan, parts: int) -> list[Any]:
        return []

    def _in(self, plan: TablePlan, r: KeyRange) -> list[dict[str, Any]]:
        rows = self._rows(plan.on(self.side).ref)
        low = int(r.lower[0]) if r.lower else None
        high = int(r.upper[0]) if r.upper else None
        return [
            row
            for row in rows
            if (low is None or int(row["id"]) >= low) and (high is None or int(row["id"]) < high)
        ]

    def range_stats(self, plan: TablePlan, ranges: Sequence[KeyRange]) -> list[Stat]:
        found: list[Stat] = []
        for r in ranges:
            rows = self._in(plan, r)
            found.append((len(rows), sum(_hash(x, self._columns(plan)) for x in rows) % 2**64))
        return found

    def split_points(
        self, plan: TablePlan, requests: Sequence[tuple[KeyRange, int, int]]
    ) -> list[list[Any]]:
        points = []
        for r, step, _ in requests:
            ids = [int(x["id"]) for x in self._in(plan, r)]
            points.append([(str(ids[i]),) for i in range(step, len(ids), step)])
        return points

    def leaf_rows(
        self, plan: TablePlan, ranges: Sequence[tuple[KeyRange, int | None]]
    ) -> list[LeafRow]:
        found: list[LeafRow] = []
        for index, (r, limit) in enumerate(ranges):
            rows = self._in(plan, r)[: limit if limit is not None else None]
            for row in rows:
                found.append(
                    (index, (str(row["id"]),), (int(row["id"]),), _hash(row, self._columns(plan)))
                )
        return found

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


class DrillConnector(StandinConnector):
    """The stand-in's connector, with SSH host executors to the lab sites, the fake HIS, and the
    reconciliation sessions over the stand-in's tables."""

    def __init__(self, world: World) -> None:
        live = LiveConnector()
        super().__init__(
            world.state, world.env, hosts=live.host, http=lambda name, node: StandinHis(world.state)
        )
        self.world = world

    def host(self, name: str, node: Node) -> HostExecutor:
        return super().host(name, node)

    def reconcile_session(self, side: Any, name: str, node: Node, connect: str | None) -> Any:
        if connect and connect.endswith("_SVC"):
            sid = connect.rsplit("/", 1)[1].removesuffix("_SVC")
            scratch = tools_state(self.world.state)["scratch"][f"{name}/{sid}"]
            return MemorySession(side, f"scratch {sid} on {name}", scratch.get("tables", {}))
        return MemorySession(side, f"c##drctl@{name}", self.world.state.node(name)["tables"])


# -- running -------------------------------------------------------------------------------------


def catalogue_for(connector: DrillConnector) -> Catalogue:
    catalogue = build_catalogue()
    catalogue.measure_with("oracle", OracleInstruments(connect=connector.connect))
    return catalogue


def short_fence(world: World, path: Path) -> Path:
    """The playbook with its fence step's ``within`` at 1 s instead of 30 s: in real mode with
    the old primary still open, the fence cannot hold and the run waits out that time before it
    refuses (or goes on under the override); the stand-in answers at once, so the wait would
    only spend the test suite's time."""
    text = path.read_text(encoding="utf-8")
    at = text.find("- id: fence_old_primary")
    if at < 0:
        return path
    within = text.find("within: 30s", at)
    if within < 0:
        return path
    copy = world.tmp / f"short-fence-{path.name}"
    copy.write_text(text[:within] + "within: 1s" + text[within + len("within: 30s") :])
    return copy


def run(
    world: World,
    playbook: str | Path,
    *,
    mode: str = "drill",
    overrides: list[str] | None = None,
    ack: bool = False,
) -> tuple[Record, RecordStore]:
    connector = DrillConnector(world)
    catalogue = catalogue_for(connector)
    path = playbook if isinstance(playbook, Path) else PLAYBOOKS / f"{playbook}.yaml"
    if mode == "real":
        path = short_fence(world, path)
    loaded = load_playbook(path, catalogue)
    store = RecordStore(world.tmp / "records", world.tmp / "locks")
    runner = Runner(
        RunRequest(
            playbook=loaded.playbook.name,
            environment=world.env.name,
            mode=mode,
            overrides=overrides or [],
            operator="test",
        ),
        loaded=loaded,
        env=world.env,
        catalogue=catalogue,
        connector=connector,
        store=store,
    )
    if ack:
        write_ack_file(runner.run_id, "acknowledge", "Wang (vendor)", "on it")
    return runner.run(), store


def assert_no_secret(
    world: World, store: RecordStore, record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    """The planted password is nowhere: journal, record store, reports, logs, command lines."""
    journal = store.journal_path(record.id).read_bytes()
    assert PASSWORD.encode() not in journal
    for path in (world.tmp / "records").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert PASSWORD not in record.to_json()
    sealed = store.sealed(record.id)
    for fmt in ("html", "md"):
        for lang in ("zh", "en"):
            assert PASSWORD.encode() not in render_report(sealed, fmt=fmt, lang=lang)
    assert PASSWORD not in caplog.text
    for call in world.calls():
        assert not any(PASSWORD in a for a in call["argv"]), call
        assert PASSWORD not in call["stdin"]


def steps_of(record: Record) -> dict[str, Any]:
    return {s.id: s for s in record.steps}


def zh_report(store: RecordStore, record: Record) -> str:
    return render_report(store.sealed(record.id), fmt="html", lang="zh").decode()


# -- switchover ----------------------------------------------------------------------------------


def test_switchover_end_to_end(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="drctl")
    record, store = run(world, "oracle-dg-switchover")
    assert record.status == "passed", record.reason
    assert world.roles() == {"his-pri": PHYSICAL, "his-dr": PRIMARY}
    steps = steps_of(record)
    switch = steps["switchover"]
    assert 'Switchover succeeded, new primary is "his_dr"' in switch.output
    assert switch.data["change"]["new_primary"] == "his_dr"
    assert switch.data["ran_on"] == "his-pri"
    assert steps["verify_service"].status == "passed"
    assert {o.name: o.met for o in record.objectives} == {"rto": True, "rpo": True}
    # the broker validated the standby before anything changed, on the standby's host
    validate = next(c for c in world.calls("dgmgrl") if "VALIDATE" in c["stdin"])
    assert validate["node"] == "his-dr"
    assert "VALIDATE DATABASE VERBOSE his_dr;" in validate["stdin"]
    # the tool ran as the Oracle OS user, from the node's home, with its SID, over SSH
    call = next(c for c in world.calls("dgmgrl") if "SWITCHOVER" in c["stdin"])
    assert call["node"] == "his-pri" and call["user"] == TEST_USER
    assert call["env"]["ORACLE_HOME"] == str(world.homes["his-pri"])
    assert call["env"]["ORACLE_SID"] == "HIS"
    assert call["env"]["NLS_LANG"] == "AMERICAN_AMERICA.AL32UTF8"
    assert call["argv"] == ["-silent"]
    report = zh_report(store, record)
    assert "Oracle Data Guard 计划内主备切换" in report and "执行主备切换" in report
    assert_no_secret(world, store, record, caplog)


def test_switchover_refused_when_the_apply_lag_is_over_the_threshold(world: World) -> None:
    world.state.set_lag("his-dr", apply=120.0)
    before = world.state.data()["nodes"]
    record, _ = run(world, "oracle-dg-switchover")
    assert record.status == "aborted"
    assert "precondition oracle.apply_lag on his-dr did not hold" in record.reason
    assert "nothing was changed" in record.reason
    assert world.state.data()["nodes"] == before
    assert "SWITCHOVER" not in world.commands("dgmgrl")


def test_switchover_refused_when_the_broker_does_not_validate_the_standby(world: World) -> None:
    world.state.set_apply("his-dr", False)
    before = world.state.data()["nodes"]
    record, _ = run(world, "oracle-dg-switchover")
    assert record.status == "aborted"
    assert "precondition dgmgrl.validate on his-dr did not hold" in record.reason
    assert "Ready for Switchover: No" in record.reason
    assert world.state.data()["nodes"] == before
    assert "SWITCHOVER" not in world.commands("dgmgrl")


def test_wrong_credentials_are_refused_and_nothing_changes(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wrong-Dgmgrl-Pw-3301"
    monkeypatch.setenv("HIS_DGMGRL_PASSWORD", wrong)
    before = world.state.data()["nodes"]
    record, store = run(world, "oracle-dg-switchover")
    assert record.status == "aborted"
    assert "dgmgrl.validate on his-dr" in record.reason
    assert "ORA-01017" in record.reason and "dgmgrl_password_env" in record.reason
    assert world.state.data()["nodes"] == before
    assert "SWITCHOVER" not in world.commands("dgmgrl")
    assert wrong not in record.to_json()
    assert_no_secret(world, store, record, caplog)


@pytest.mark.parametrize("missing", ["home", "tool"])
def test_a_missing_oracle_home_is_a_located_error_and_nothing_changes(
    sites: Sites, tmp_path: Path, secrets: None, missing: str
) -> None:
    if missing == "home":
        made = make_world(sites, tmp_path, oracle={"his-dr": {"oracle_home": "/u01/nowhere/db"}})
        expected = "ORACLE_HOME /u01/nowhere/db does not exist on the host of node his-dr"
    else:
        made = make_world(sites, tmp_path, tools={"his-dr": ("rman", "sqlplus")})
        expected = f"{made.homes['his-dr']}/bin/dgmgrl is not there or not executable"
    try:
        before = made.state.data()["nodes"]
        record, _ = run(made, "oracle-dg-switchover")
        assert record.status == "aborted"
        assert "dgmgrl.validate on his-dr" in record.reason
        assert expected in record.reason, record.reason
        assert "127.0.0.3" in record.reason  # which host, as it was reached
        assert made.state.data()["nodes"] == before
        assert not made.calls("dgmgrl")
    finally:
        shutil.rmtree(made.root, ignore_errors=True)


# -- failover ------------------------------------------------------------------------------------


def test_failover_end_to_end_reinstates_the_old_primary(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    record, store = run(world, "oracle-dg-failover")
    assert record.status == "passed", record.reason
    steps = steps_of(record)
    assert "SHUTDOWN ABORT" in world.commands("sqlplus")
    crash = next(c for c in world.calls("sqlplus") if "SHUTDOWN ABORT" in c["stdin"])
    assert crash["argv"] == ["-S", "-L", "/", "as", "sysdba"] and crash["node"] == "his-pri"
    assert steps["fence_old_primary"].status == "passed"
    assert steps["failover"].data["change"]["new_primary"] == "his_dr"
    reinstate = steps["reinstate_old_primary"]
    assert reinstate.data["reinstated"] is True and reinstate.data["flashback_on"] == "YES"
    assert 'Reinstatement of database "his_pri" succeeded' in reinstate.output
    assert world.roles() == {"his-pri": PHYSICAL, "his-dr": PRIMARY}
    assert world.state.node("his-pri")["apply"]
    assert "Oracle Data Guard 故障切换" in zh_report(store, record)
    assert_no_secret(world, store, record, caplog)


def test_failover_without_flashback_says_the_old_primary_needs_rebuilding(world: World) -> None:
    world.state.set("his-pri", flashback_on="NO")
    record, _ = run(world, "oracle-dg-failover")
    assert record.status == "passed", record.reason
    reinstate = steps_of(record)["reinstate_old_primary"]
    assert reinstate.data["reinstated"] is False and reinstate.data["needs_rebuild"] is True
    assert "needs rebuilding" in reinstate.output
    assert "REINSTATE" not in world.commands("dgmgrl")
    assert not world.state.node("his-pri")["up"]  # left down, not half-reinstated
    assert world.state.primary() == "his-dr"


def topology(state: StandinState) -> dict[str, tuple[Any, ...]]:
    """Who is what: role, open mode, up, waiting for reinstatement, applying (not the rows)."""
    return {
        name: (n["database_role"], n["open_mode"], n["up"], n["needs_reinstate"], n["apply"])
        for name, n in state.data()["nodes"].items()
    }


def test_failover_refused_while_the_old_primary_is_open_read_write(world: World) -> None:
    before = topology(world.state)
    record, _ = run(world, "oracle-dg-failover", mode="real")  # no crash: the primary still runs
    assert record.status == "aborted"
    fence = steps_of(record)["fence_old_primary"]
    assert fence.status == "failed"
    assert "oracle.rejects_writes on his-pri did not hold" in fence.reason
    assert [s.id for s in record.steps] == ["inject_crash", "fence_old_primary"]
    assert topology(world.state) == before
    assert "FAILOVER" not in world.commands("dgmgrl")


def test_failover_under_the_override_goes_on_and_the_record_says_so(world: World) -> None:
    record, _ = run(world, "oracle-dg-failover", mode="real", overrides=["unfenced_promotion"])
    fence = steps_of(record)["fence_old_primary"]
    assert fence.status == "overridden" and fence.override == "unfenced_promotion"
    assert "went on under override unfenced_promotion" in fence.reason
    assert world.state.node("his-dr")["database_role"] == PRIMARY
    # the old primary still takes writes: no lag read before the failover bounds what it loses
    lost = record.measurements.lost_transactions
    assert lost is not None and lost.loss_accounting == "lower_bound"
    assert "was still open read write after the failover" in lost.what_is_exact
    assert not {o.name: o.met for o in record.objectives}["rpo"]


# -- what a failover may have lost (oracle.account_for_loss) -------------------------------------


def failover_with_rpo(world: World, target: str) -> Path:
    """oracle-dg-failover as shipped, with the rpo objective's target replaced."""
    data = yaml.safe_load((PLAYBOOKS / "oracle-dg-failover.yaml").read_text())
    data["objectives"]["rpo"]["target"] = target
    path = world.tmp / f"oracle-dg-failover-rpo-{target}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def report_view(store: RecordStore, record: Record, lang: str) -> dict[str, Any]:
    from drills.reports.site import PACKAGE
    from drills.reports.view import ReportInput, build_view

    words = yaml.safe_load((PACKAGE / "messages.yaml").read_text())
    return build_view(ReportInput(store.sealed(record.id).record, None, []), lang, {}, words[lang])


def untranslated(value: Any) -> list[str]:
    """The English a zh report quotes as it is (what the phrase book did not translate)."""
    from drills.reports.phrases import Said

    if isinstance(value, Said):
        return list(value.unknown)
    if isinstance(value, dict):
        return [u for v in value.values() for u in untranslated(v)]
    if isinstance(value, list | tuple):
        return [u for v in value for u in untranslated(v)]
    return []


def said_of(objectives: list[dict[str, Any]]) -> list[Any]:
    """What the report says of each objective (its basis and note; its source is the site's)."""
    return [[o["basis"], o["note"]] for o in objectives]


@pytest.mark.parametrize("target", ["shipped", "0s"])
def test_a_failover_without_transport_lag_is_bounded_at_zero_and_meets_rpo(
    world: World, target: str
) -> None:
    # the standby's V$DATAGUARD_STATS as published with DATUM_TIME = TIME_COMPUTED, lags 0
    world.state.use("his-dr", "v$dataguard_stats", "datum_current_adg")
    shipped = PLAYBOOKS / "oracle-dg-failover.yaml"
    record, store = run(world, shipped if target == "shipped" else failover_with_rpo(world, target))
    assert record.status == "passed", record.reason
    steps = steps_of(record)
    before = steps["lag_before_failover"].data["lag_before_failover"]
    assert before["lags"]["transport lag"]["datum_time"] == "07/12/2022 01:55:37"
    assert "at most 0s of redo may be lost" in steps["lag_before_failover"].output
    m = record.measurements
    lost = m.lost_transactions
    assert lost is not None and lost.loss_accounting == "bound" and lost.engine == "oracle"
    assert (lost.rpo_seconds, m.rpo_seconds, m.lost_writes, lost.count) == (0.0, 0.0, 0, 0)
    assert m.canary is not None and m.canary.lost == 0 and m.canary.written > 0
    became = world.state.node("his-dr")["standby_became_primary_scn"]
    assert lost.switch_scn == became
    redo = lost.readings["after_failover"]["old_primary_redo"]
    assert redo["last_scn"] < became and redo["open_mode"] == "MOUNTED"  # mounted for it
    assert f"is not past the SCN {became}" in lost.note
    assert "not known: how many transactions were lost" in lost.what_is_exact
    assert "a bound: the window of possible loss is at most 0s" in lost.what_is_exact
    [rpo] = [o for o in record.objectives if o.name == "rpo"]
    assert rpo.met and rpo.measured_seconds == 0.0 and "a bound" in rpo.basis
    # reinstated afterwards, from the mounted instance the accounting left
    assert world.roles() == {"his-pri": PHYSICAL, "his-dr": PRIMARY}
    zh = report_view(store, record, "zh")
    assert "可能丢失的时间窗口上限：不超过 0.000s" in str(zh["lost_transactions"]["text"])
    assert "哪些数据精确" in str(zh["lost_transactions"]["exactness"])
    # no English sentence in what the zh report says of the loss and the objectives
    assert not untranslated([zh["lost_transactions"], said_of(zh["objectives"])])


def test_a_failover_with_a_transport_lag_misses_rpo_0_on_the_bound(world: World) -> None:
    # the standby's recorded 19c V$DATAGUARD_STATS (DATUM_TIME 1s behind TIME_COMPUTED), with
    # a transport lag of 12s: the primary's redo no longer reaches it, so its writes are lost
    # (drctl's own tables are there from earlier drills, as on a site)
    for table in DRCTL_TABLES:
        world.state.create_table("his-pri", table)
    world.state.set_lag("his-dr", transport=12.0)
    record, store = run(world, failover_with_rpo(world, "0s"))
    assert record.status == "failed", record.reason
    assert "rpo" in record.reason
    steps = steps_of(record)
    lag = steps["lag_before_failover"].data["lag_before_failover"]["lags"]["transport lag"]
    assert (lag["value"], lag["seconds"], lag["datum_age_seconds"]) == ("+00 00:00:12", 12.0, 1.0)
    m = record.measurements
    lost = m.lost_transactions
    assert lost is not None and lost.loss_accounting == "bound"
    assert lost.rpo_seconds == m.rpo_seconds == 13.0  # 12s of lag, 1s since the last datum
    # the canary's lost rows are a lower bound, and are the count the record gives
    assert m.canary is not None and m.canary.lost > 0
    assert m.lost_writes == lost.count == m.canary.lost
    assert "the canary's figures are a lower bound" in lost.note
    became = world.state.node("his-dr")["standby_became_primary_scn"]
    redo = lost.readings["after_failover"]["old_primary_redo"]
    assert redo["last_scn"] > became  # the old primary's control file has redo past it
    assert f"is past the SCN {became} at which his-dr became primary" in lost.note
    [rpo] = [o for o in record.objectives if o.name == "rpo"]
    assert not rpo.met and rpo.measured_seconds == 13.0
    assert "a bound: at most 13s of the old primary's redo" in rpo.basis
    assert "a loss within 0s cannot be shown" in rpo.note
    for lang in ("zh", "en"):
        doc = report_view(store, record, lang)
        section = doc["lost_transactions"]
        if lang == "zh":
            assert "不超过 13.0s" in str(section["text"]) and "RPO（上限）" in section["rpo"]
            assert any("无法证明丢失不超过 0s" in str(o["note"]) for o in doc["objectives"])
            assert not untranslated([section, said_of(doc["objectives"])])
        else:
            assert "the window of possible loss is at most 13.0s" in str(section["text"])


# -- RMAN ----------------------------------------------------------------------------------------


def test_backup_validate_clean_and_corrupt(world: World) -> None:
    write_backup(world.state, "his-dr", world.backups, owner=TEST_USER)
    record, _ = run(world, "oracle-rman-backup-validate")
    steps = steps_of(record)
    assert steps["validate_blocks"].status == "passed", steps["validate_blocks"].reason
    assert steps["validate_blocks"].data["validate"]["clean"] is True
    assert steps["validate_restore"].status == "passed", steps["validate_restore"].reason
    assert steps["validate_restore"].data["preview"]["recovery_beyond_scn"] == 4474200
    assert "BACKUP VALIDATE CHECK LOGICAL DATABASE ARCHIVELOG ALL;" in world.commands("rman")

    set_tools(world.state, "corrupt", "his-dr", {"7": {"marked": 0, "failing": {"Data": 3}}})
    record, _ = run(world, "oracle-rman-backup-validate")
    assert record.status == "failed"
    bad = steps_of(record)["validate_blocks"]
    assert bad.status == "failed"
    assert "found corruption: datafile 7" in bad.error and "Data 3" in bad.error
    assert bad.data["validate"]["corrupt"][0].startswith("datafile 7")


def test_restore_test_restores_recovers_reconciles_and_removes(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    write_backup(world.state, "his-pri", world.backups, owner=TEST_USER)
    playbook = restore_playbook(world, until_scn=4474300)
    record, store = run(world, playbook)
    assert record.status == "passed", record.reason
    steps = steps_of(record)
    restored = steps["restore_scratch"].data
    assert restored["until_scn"] == 4474300 and restored["db_name"] == "HIS"
    assert restored["backup_age_seconds"] < 600
    assert restored["restore_seconds"] >= 0 and restored["recovery_seconds"] >= 0
    assert restored["controlfile"].startswith(str(world.backups) + "/c-2718281828-")
    compared = steps["reconcile"].data["reconcile"]
    tables = {t["table"]: t for t in compared["tables"]}
    assert tables["HIS.PATIENT"]["identical"] and tables["HIS.PATIENT"]["source_rows"] == 40
    assert "RESTORE CONTROLFILE FROM" in world.commands("rman")
    assert "SET UNTIL SCN 4474300;" in world.commands("rman")
    assert "ALTER DATABASE OPEN READ ONLY;" in world.commands("sqlplus")
    # the scratch instance is gone: shut down, its directory removed, the run's state cleared
    assert tools_state(world.state)["scratch"]["his-dr/DRCTLSCR"]["status"] == "DOWN"
    assert not Path(restored["scratch_dir"]).exists()
    assert STATE_KEY not in load_state(world.env.name, "his-dr")
    assert {o.name: o.met for o in record.objectives} == {"restore_time": True}
    assert "备份恢复验证" in zh_report(store, record)
    assert_no_secret(world, store, record, caplog)


def test_restore_test_names_the_rows_that_differ_and_still_removes_the_copy(world: World) -> None:
    write_backup(world.state, "his-pri", world.backups, owner=TEST_USER)
    world.state.write("his-pri", "his.patient", {"id": 41, "name": "新患者", "born": "2020-02-02"})
    record, _ = run(world, restore_playbook(world))
    assert record.status == "failed" and record.rolled_back
    reconcile = steps_of(record)["reconcile"]
    assert reconcile.status == "failed"
    assert "HIS.PATIENT" in reconcile.error and "missing in target" in reconcile.error
    diff = next(t for t in reconcile.data["reconcile"]["tables"] if t["table"] == "HIS.PATIENT")
    assert diff["diffs"][0]["key"] == [41]
    assert steps_of(record)["remove_scratch"].status == "passed"
    assert tools_state(world.state)["scratch"]["his-dr/DRCTLSCR"]["status"] == "DOWN"


def test_restore_test_refuses_a_backup_older_than_allowed(world: World) -> None:
    import time

    write_backup(world.state, "his-pri", world.backups, owner=TEST_USER, at=time.time() - 5 * 86400)
    record, _ = run(world, restore_playbook(world))
    assert record.status == "failed"
    step = steps_of(record)["restore_scratch"]
    assert "older than max_backup_age" in step.error
    assert step.data["backup_age_seconds"] > 4 * 86400
    assert "RESTORE" not in world.commands("rman")


def restore_playbook(world: World, **changes: Any) -> Path:
    """The shipped restore test with the lab's backup directory (and ``changes``)."""
    body = yaml.safe_load((PLAYBOOKS / "oracle-rman-restore-test.yaml").read_text())
    first = body["steps"][0]
    first["with"].update(backup_dir=str(world.backups), **changes)
    path = world.tmp / "oracle-rman-restore-test.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True, sort_keys=False))
    return path


# -- Data Pump migration -------------------------------------------------------------------------


def migration_world(sites: Sites, tmp_path: Path) -> tuple[World, Path]:
    made = make_world(
        sites,
        tmp_path,
        nodes={"his-old": "his_old", "his-new": "his_new"},
        roles={"his-old": "source", "his-new": "target"},
    )
    made.state.set("his-new", database_role=PRIMARY, open_mode="READ WRITE", apply=False)
    with made.state.change("his-new is a new, empty database") as data:
        data["nodes"]["his-new"]["tables"] = {}
    body = yaml.safe_load((PLAYBOOKS / "oracle-datapump-migrate.yaml").read_text())
    for step in body["steps"]:
        if "directory_path" in step.get("with", {}):
            node = "his-old" if step["target"] == "source" else "his-new"
            step["with"]["directory_path"] = str(made.dpdump[node])
    path = made.tmp / "oracle-datapump-migrate.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True, sort_keys=False))
    return made, path


def test_datapump_migration_end_to_end(
    sites: Sites, tmp_path: Path, secrets: None, caplog: pytest.LogCaptureFixture
) -> None:
    made, playbook = migration_world(sites, tmp_path)
    try:
        record, store = run(made, playbook)
        assert record.status == "passed", record.reason
        steps = steps_of(record)
        assert steps["freeze_source"].data["frozen"] == ["PATIENT", "REGISTRATION"]
        exported = steps["export_source"].data
        assert exported["rows"] == {"PATIENT": 40, "REGISTRATION": 0}
        assert steps["move_dump"].data["copied"] is True  # two hosts: through the executors
        assert steps["import_target"].data["rows"]["imported"]["PATIENT"] == 40
        assert steps["reconcile_tables"].data["reconcile"]["tables_differing"] == 0
        assert made.state.rows("his-new", "his.patient") == made.state.rows(
            "his-old", "his.patient"
        )
        assert not tools_state(made.state)["frozen"].get("his-old")  # released (drill mode)
        assert {o.name: o.met for o in record.objectives} == {"downtime": True}
        # the password went to Data Pump in a parameter file, removed after: never an argument
        assert all(c["argv"][0].startswith("parfile=") for c in made.calls("expdp"))
        assert not list(made.dpdump["his-old"].glob(".drctl-*.par"))
        assert "数据泵" in zh_report(store, record)
        assert_no_secret(made, store, record, caplog)
    finally:
        shutil.rmtree(made.root, ignore_errors=True)


def test_a_failed_import_gives_the_source_its_writes_back(
    sites: Sites, tmp_path: Path, secrets: None
) -> None:
    made, playbook = migration_world(sites, tmp_path)
    try:
        made.state.create_table("his-new", "his.patient")  # already there: impdp skips it
        record, _ = run(made, playbook)
        assert record.status == "failed" and record.rolled_back
        steps = steps_of(record)
        assert steps["import_target"].status == "failed"
        assert "ORA-39151" in steps["import_target"].error
        assert steps["release_source_after_failure"].status == "passed"
        assert not tools_state(made.state)["frozen"].get("his-old")
    finally:
        shutil.rmtree(made.root, ignore_errors=True)


# -- inspection, emergency activation, plan ------------------------------------------------------


def test_inspection_is_rendered_as_the_quarterly_report(world: World) -> None:
    record, store = run(world, "oracle-inspection")
    assert record.status in ("passed", "failed"), record.reason
    steps = steps_of(record)
    assert steps["broker_status"].status == "passed", steps["broker_status"].reason
    assert len(record.steps) == 23 and all(s.checks for s in record.steps)
    report = zh_report(store, record)
    assert "季度巡检报告" in report and "Data Guard Broker 状态" in report


def test_emergency_activation_on_oracle(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """The one activation playbook (his-emergency-activation, the PostgreSQL lab's too): its
    db.* steps run the Oracle engine's actions because the environment's nodes are Oracle."""
    record, store = run(world, "his-emergency-activation", ack=True)
    assert record.status == "passed", record.reason
    milestones = [m.name for m in record.milestones]
    for name in (
        "incident_declared",
        "engineer_acknowledged",
        "activation_started",
        "writes_restored",
        "service_verified",
    ):
        assert name in milestones
    assert world.state.primary() == "his-dr"
    assert {o.name: o.met for o in record.objectives} == {"response": True, "activation": True}
    steps = steps_of(record)
    ran = {i: s.data.get("dispatched", {}).get("action") for i, s in steps.items()}
    assert ran == {
        "declare_incident": None,
        "acknowledge": None,
        "inject_crash": "oracle.shutdown_abort",
        "fence_old_primary": "oracle.fence",
        "lag_before_failover": "oracle.record_lag_before_failover",
        "promote_standby": "oracle.dg_failover",
        "verify_service": None,
        "count_lost_transactions": "oracle.account_for_loss",
        "rejoin_old_primary": "oracle.rejoin_as_standby",
    }
    crash = next(c for c in world.calls("sqlplus") if "SHUTDOWN ABORT" in c["stdin"])
    assert crash["node"] == "his-pri"
    assert steps["inject_crash"].data["host"] == "his-pri"
    # fenced: both Oracle checks held, in one db.fenced result
    [fenced] = steps["fence_old_primary"].checks
    assert fenced.check == "db.fenced" and fenced.held
    assert set(fenced.observed) == {"oracle.rejects_writes", "sqlplus.instance_down"}
    assert "FAILOVER TO his_dr" in world.commands("dgmgrl")
    assert steps["promote_standby"].data["change"]["new_primary"] == "his_dr"
    assert [c.check for c in steps["promote_standby"].checks] == [
        "db.is_primary",
        "db.takes_writes",
    ]
    lost = steps["count_lost_transactions"]
    assert lost.data["dispatched"] == {
        "neutral": "db.count_lost_transactions",
        "engine": "oracle",
        "action": "oracle.account_for_loss",
        "target": "primary",
        "node": "his-pri",
    }
    # The standby's lag was read before the switch (db.record_lag): the window of possible loss
    # is bounded by it, the SCN at which the standby became primary is exact, and the count of
    # lost transactions is not known (no LogMiner), as the record says.
    found = record.measurements.lost_transactions
    assert lost.status == "passed", lost.output
    assert found is not None and found.engine == "oracle", found
    assert found.loss_accounting == "bound" and found.count is None, found
    assert found.switch_scn == world.state.node("his-dr")["standby_became_primary_scn"] > 0
    assert record.measurements.rpo_seconds is not None
    # rejoined: REINSTATE DATABASE from the new primary; the old one a standby applying redo
    rejoin = steps["rejoin_old_primary"]
    assert rejoin.node == "his-pri" and rejoin.data["reinstated"] is True
    assert rejoin.data["ran_on"] == "his-dr"
    assert 'Reinstatement of database "his_pri" succeeded' in rejoin.output
    assert all(c.held for c in rejoin.checks)
    assert world.roles() == {"his-pri": PHYSICAL, "his-dr": PRIMARY}
    assert world.state.node("his-pri")["apply"]
    assert "HIS应急启用" in zh_report(store, record)
    assert_no_secret(world, store, record, caplog)


def test_emergency_activation_on_oracle_without_flashback_leaves_the_rejoin_failed(
    world: World,
) -> None:
    world.state.set("his-pri", flashback_on="NO")
    record, _ = run(world, "his-emergency-activation", ack=True)
    steps = steps_of(record)
    rejoin = steps["rejoin_old_primary"]
    assert rejoin.data["needs_rebuild"] is True and "needs rebuilding" in (rejoin.error or "")
    assert rejoin.data["dispatched"]["action"] == "oracle.rejoin_as_standby"
    # the old primary is no standby: the pair is not restored, and no check waited for one
    assert rejoin.status == "failed" and rejoin.checks == []
    assert record.status == "failed"
    assert "steps rejoin_old_primary failed; the others ran" in record.reason
    assert all(s.status == "passed" for i, s in steps.items() if i != "rejoin_old_primary")
    assert {o.name: o.met for o in record.objectives} == {"response": True, "activation": True}
    assert "REINSTATE" not in world.commands("dgmgrl")
    assert world.state.primary() == "his-dr" and not world.state.node("his-pri")["up"]


def test_emergency_activation_on_oracle_refuses_while_the_old_primary_is_open(
    world: World,
) -> None:
    before = topology(world.state)
    record, _ = run(world, "his-emergency-activation", mode="real", ack=True)
    assert record.status == "aborted"
    fence = steps_of(record)["fence_old_primary"]
    assert fence.status == "failed"
    assert "db.fenced on his-pri did not hold" in fence.reason
    assert "oracle.rejects_writes did not hold (PRIMARY, READ WRITE)" in fence.checks[0].detail
    assert [s.id for s in record.steps][-1] == "fence_old_primary"
    assert topology(world.state) == before
    assert "FAILOVER" not in world.commands("dgmgrl")
    # the contract's response was met; the switch never started
    assert {o.name: o.met for o in record.objectives}["response"] is True


def test_emergency_activation_validates_and_may_run_on_his_oracle() -> None:
    from drills.engine.loader import load_environment_file
    from drills.engine.policy import check_request

    env = load_environment_file(REPO / "playbooks" / "environments" / "his-oracle.yaml")
    loaded = load_playbook(PLAYBOOKS / "his-emergency-activation.yaml")
    check_request(loaded, env, RunRequest(playbook=loaded.playbook.name, environment=env.name))
    assert not (PLAYBOOKS / "oracle-emergency-activation.yaml").exists()  # one playbook


def test_plan_shows_every_command_host_and_user_without_a_password(world: World) -> None:
    from drills.cli.app import app

    env_file = world.tmp / f"{world.env.name}.yaml"
    env_file.write_text(
        yaml.safe_dump(world.env.model_dump(mode="json", exclude_none=True), allow_unicode=True)
    )
    for playbook, host, wanted in (
        (
            "oracle-dg-switchover",
            "his-pri",
            [
                "dgmgrl -silent",
                "dgmgrl> CONNECT c##drctl/********@his_pri",
                "dgmgrl> SWITCHOVER TO his_dr;",
                "ORACLE_SID=HIS",
            ],
        ),
        (
            "oracle-dg-failover",
            "his-pri",
            [
                "sqlplus -S -L / as sysdba",
                "sqlplus> SHUTDOWN ABORT",
                "dgmgrl> FAILOVER TO his_dr;",
                "dgmgrl> REINSTATE DATABASE his_pri;",
            ],
        ),
        (
            "his-emergency-activation",
            "his-dr",
            [
                "oracle: oracle.shutdown_abort",
                "sqlplus> SHUTDOWN ABORT",
                "oracle: oracle.dg_failover",
                "dgmgrl> FAILOVER TO his_dr;",
                "oracle: oracle.rejoin_as_standby",
                "dgmgrl> REINSTATE DATABASE his_pri;",
            ],
        ),
        (
            "oracle-rman-backup-validate",
            "his-dr",
            [
                "bin/rman",
                "rman> CONNECT TARGET /",
                "rman> BACKUP VALIDATE CHECK LOGICAL DATABASE ARCHIVELOG ALL;",
            ],
        ),
    ):
        result = CliRunner().invoke(app, ["plan", playbook, "--env", str(env_file)])
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        for line in wanted:
            assert line in text, (playbook, line, result.output)
        node = world.env.nodes[host]
        assert node.ssh is not None
        assert f"on {host}: ssh -p {node.ssh.port} {TEST_USER}@{node.host} --" in text
        assert PASSWORD not in result.output
    assert world.calls() == []  # plan ran nothing on the hosts
