"""The engine-neutral actions and checks (``db.*``, ``drills.engine.neutral``): what each engine
equated to them, what the catalogue refuses while it is built, the located refusal of a step
whose node's engine has no equivalent, and the plan of the one activation playbook on Oracle
(its dispatch; the runs themselves are in test_activation.py and test_oracle_drills.py).

Nothing here reaches a database: plan's ``describe`` only builds command lines, and the
checks here are asked of a probe whose node has no database section."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drills.engine.catalogue import Catalogue, Equivalent, build_catalogue
from drills.engine.loader import bundled_playbooks, load_environment_file, load_playbook
from drills.engine.neutral import ACTIONS, CHECKS, neutral_problems, register
from drills.engine.policy import check_request
from drills.engine.targets import Targets
from drills.model.environment import Environment
from drills.model.errors import InputError, ValidationFailed
from drills.model.request import RunRequest

ACTIVATION = bundled_playbooks() / "his-emergency-activation.yaml"
HIS_ORACLE = bundled_playbooks() / "environments" / "his-oracle.yaml"
NEUTRAL = [n.name for n in (*ACTIONS, *CHECKS)]


def pg_env() -> Environment:
    pg = {"data_dir": "/srv/pg", "bin_dir": "/usr/lib/postgresql/18/bin"}
    return Environment.model_validate(
        {
            "name": "pg-pair",
            "nodes": {
                "db1": {"role": "primary", "host": "127.0.0.2", "postgres": pg},
                "db2": {"role": "standby", "host": "127.0.0.3", "postgres": pg},
                "app": {"role": "app", "host": "127.0.0.4", "http": {"base_url": "http://x"}},
            },
        }
    )


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize("engine", ["postgres", "oracle"])
def test_both_engines_equate_every_neutral_name_to_something_they_registered(engine: str) -> None:
    catalogue = build_catalogue()
    for name in NEUTRAL:
        equivalents = catalogue.equivalents[name][engine]
        for e in equivalents:
            if e.name is not None:
                own = catalogue.actions if name in catalogue.actions else catalogue.checks
                assert own[e.name].engine == engine, (name, e.name)
    # an action runs exactly one equivalent; the neutral spec is in the catalogue
    for action in ACTIONS:
        assert len(catalogue.equivalents[action.name][engine]) == 1
        assert catalogue.actions[action.name].engine == "neutral"


def fresh(*equate: tuple[str, str, Equivalent]) -> Catalogue:
    """A catalogue of the core and both engines, with more equated, neutral not yet added."""
    catalogue = build_catalogue()
    for name in NEUTRAL:
        catalogue.actions.pop(name, None)
        catalogue.checks.pop(name, None)
    for engine, neutral, equivalent in equate:
        catalogue.equivalents.setdefault(neutral, {}).pop(engine, None)
        catalogue.equate(engine, neutral, equivalent)
    return catalogue


def test_the_catalogue_refuses_equivalents_that_could_not_run() -> None:
    cases = [
        (("oracle", "db.failover", Equivalent("oracle.no_such")), "no registered action"),
        (("oracle", "db.fence", Equivalent(None, why="none")), "db.fence is required to act"),
        (("postgres", "db.fenced", Equivalent("pg.no_such")), "no registered check"),
        (("oracle", "db.teleport", Equivalent("oracle.sql")), "no engine-neutral action"),
        (("oracle", "db.count_lost_transactions", Equivalent(None)), "without saying why"),
    ]
    for equate, message in cases:
        with pytest.raises(InputError, match=message):
            register(fresh(equate))
    catalogue = build_catalogue()
    with pytest.raises(InputError, match="equated twice"):
        catalogue.equate("postgres", "db.crash", "pg.kill")


def without(engine: str, neutral: str) -> Catalogue:
    catalogue = build_catalogue()
    del catalogue.equivalents[neutral][engine]
    return catalogue


def test_a_step_whose_engine_has_no_equivalent_is_located_at_the_step() -> None:
    loaded = load_playbook(ACTIVATION)
    env = load_environment_file(HIS_ORACLE)
    request = RunRequest(playbook=loaded.playbook.name, environment=env.name)
    check_request(loaded, env, request)  # the shipped catalogue: every step has one
    with pytest.raises(ValidationFailed) as caught:
        check_request(loaded, env, request, without("oracle", "db.failover"))
    [problem] = caught.value.problems
    assert problem.file == str(ACTIVATION)
    assert problem.line == line_of(ACTIVATION, "action: db.failover")
    assert problem.step == "promote_standby"
    assert "action db.failover on node his-dr (role standby)" in problem.message
    assert "engine oracle has no equivalent (engines that have one: postgres)" in problem.message

    # a check of a step, and a precondition, the same way
    problems = neutral_problems(
        loaded.playbook, loaded.doc, env, without("oracle", "db.is_standby")
    )
    assert len(problems) == 2
    where = {p.step: p for p in problems}
    assert (
        "check db.is_standby on node his-pri (role primary)" in where["rejoin_old_primary"].message
    )
    assert where[None].line == line_of(ACTIVATION, "  - check: db.is_standby")
    assert "on node his-dr (role standby): engine oracle" in where[None].message


def test_a_neutral_step_on_a_node_without_a_database_is_located() -> None:
    loaded = load_playbook(ACTIVATION)
    data = yaml.safe_load(ACTIVATION.read_text())
    env = pg_env()
    env.nodes["db2"] = env.nodes["db2"].model_copy(update={"postgres": None})
    problems = neutral_problems(loaded.playbook, loaded.doc, env, build_catalogue())
    assert problems and all("node db2 (role standby)" in p.message for p in problems)
    assert "the node has no database section" in problems[0].message
    # the lag read, the failover's action and both its checks, and the precondition
    assert [p.step for p in problems] == ["lag_before_failover"] + ["promote_standby"] * 3 + [None]
    assert [p.line for p in problems[:3]] == [
        line_of(ACTIVATION, "action: db.record_lag"),
        line_of(ACTIVATION, "action: db.failover"),
        line_of(ACTIVATION, "- check: db.is_primary"),
    ]
    assert data["engines"] == ["postgres", "oracle"]


def test_at_a_step_a_missing_equivalent_names_the_node_and_the_engine() -> None:
    env = load_environment_file(HIS_ORACLE)
    catalogue = without("oracle", "db.crash")
    targets = Targets(env, {"primary": "his-pri", "standby": "his-dr"})
    spec = catalogue.action("db.crash")
    with pytest.raises(InputError) as caught:
        spec.describe(targets, "primary", spec.params())
    assert caught.value.host == "his-pri"
    assert "db.crash on node his-pri (role primary): engine oracle has no equivalent" in str(
        caught.value
    )
    check = catalogue.check("db.is_primary")
    pg = pg_env()
    with pytest.raises(InputError, match=r"node app .*no database section"):
        check.fn(Targets(pg, {"app": "app"}), "app", check.params())


def test_plan_describes_what_each_engine_runs() -> None:
    catalogue = build_catalogue()
    loaded = load_playbook(ACTIVATION)
    steps = {s.id: s for s in loaded.playbook.steps}
    oracle = Targets(
        load_environment_file(HIS_ORACLE),
        {"primary": "his-pri", "standby": "his-dr", "app": "app"},
    )
    postgres = Targets(pg_env(), {"primary": "db1", "standby": "db2", "app": "app"})

    def described(targets: Targets, step: str) -> str:
        spec = catalogue.action(steps[step].action)
        params = spec.params.model_validate(steps[step].with_)
        return "\n".join(spec.describe(targets, steps[step].target, params))

    assert described(postgres, "inject_crash").startswith("postgres: pg.kill\non db1: kill -KILL")
    assert "oracle: oracle.shutdown_abort" in described(oracle, "inject_crash")
    assert "sqlplus> SHUTDOWN ABORT" in described(oracle, "inject_crash")
    assert "postgres: pg.fence\nlook at db1" in described(postgres, "fence_old_primary")
    assert "nothing is stopped or killed on his-pri" in described(oracle, "fence_old_primary")
    assert "SQL on db2: select pg_promote(wait => false)" in described(postgres, "promote_standby")
    failover = described(oracle, "promote_standby")
    assert failover.startswith("oracle: oracle.dg_failover\non his-dr: ssh")
    assert "dgmgrl> FAILOVER TO his_dr;" in failover
    # the Oracle rejoin is reinstated from the new primary: its DGMGRL runs on his-dr
    rejoin = described(oracle, "rejoin_old_primary")
    assert rejoin.startswith("oracle: oracle.rejoin_as_standby\nif his-pri is down:")
    assert "on his-dr: ssh" in rejoin and "dgmgrl> REINSTATE DATABASE his_pri;" in rejoin
    assert "pg_rewind --target-pgdata=/srv/pg" in described(postgres, "rejoin_old_primary")
    lost = described(oracle, "count_lost_transactions")
    assert lost.startswith("oracle: oracle.account_for_loss\nSQL on his-dr:")
    assert "STANDBY_BECAME_PRIMARY_SCN" in lost.upper() and "v$thread" in lost
    assert "postgres: pg.count_lost_transactions" in described(postgres, "count_lost_transactions")
    oracle.close()
    postgres.close()


def test_an_equivalent_may_run_on_another_role_and_the_plan_says_where() -> None:
    """An engine's equivalent may act from another node (its adapt gives the role)."""

    def from_source(role: str, params: dict[str, object]) -> tuple[str, dict[str, object]]:
        return str(params["source"]), {"database": role}

    catalogue = fresh(("oracle", "db.rejoin", Equivalent("oracle.dg_reinstate", from_source)))
    register(catalogue)
    targets = Targets(
        load_environment_file(HIS_ORACLE), {"primary": "his-pri", "standby": "his-dr"}
    )
    spec = catalogue.action("db.rejoin")
    lines = spec.describe(targets, "primary", spec.params(source="standby"))
    assert lines[0] == "oracle: oracle.dg_reinstate on standby (his-dr)"
    assert "  dgmgrl> REINSTATE DATABASE his_pri;" in lines
    # parameters the engine's action does not take are an error naming both
    bad = fresh(("oracle", "db.rejoin", Equivalent("oracle.dg_reinstate")))
    register(bad)
    spec = bad.action("db.rejoin")
    with pytest.raises(
        InputError, match=r"oracle\.dg_reinstate .*equivalent of db\.rejoin.* does not"
    ):
        spec.describe(targets, "primary", spec.params(source="standby"))
    targets.close()
