"""Playbook validation: every problem at once, each with file, line and step; never a traceback."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from drills.engine.loader import bundled_playbooks, load_playbook
from drills.model.errors import ValidationFailed
from drills.model.playbook import playbook_json_schema
from tests.helpers import drctl

GOOD = textwrap.dedent(
    """\
    name: tiny
    version: 1
    kind: inspection
    title: {en: Tiny, zh: 小}
    roles: [primary]
    steps:
      - id: look
        action: observe
        target: primary
        verify:
          - check: pg.is_primary
    """
)


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        load_playbook(path)
    return [str(p) for p in caught.value.problems]


def test_shipped_playbooks_are_valid_and_match_the_schema() -> None:
    schema = playbook_json_schema()
    shipped = sorted(bundled_playbooks().glob("*.yaml"))
    assert {p.stem for p in shipped} >= {"pg-switchover", "pg-failover"}
    for path in shipped:
        loaded = load_playbook(path)
        assert len(loaded.sha256) == 64
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_a_good_playbook_loads(tmp_path: Path) -> None:
    loaded = load_playbook(write(tmp_path, GOOD))
    assert loaded.playbook.steps[0].id == "look"
    assert loaded.playbook.steps[0].within == 30.0


def test_unknown_key_names_file_line_and_step(tmp_path: Path) -> None:
    path = write(
        tmp_path, GOOD.replace("    target: primary\n", "    target: primary\n    colour: red\n")
    )
    [problem] = problems_of(path)
    assert problem == f"{path}:10 [step look]: unknown key 'colour'"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD + (
        "  - id: second\n"
        "    action: teleport\n"
        "    target: witness\n"
        "    timeout: soon\n"
        "    with: {x: 1}\n"
    )
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ValidationFailed) as caught:
        load_playbook(path)
    found = [str(p) for p in caught.value.problems]
    # The timeout is a model error; the action and role are found once the model is valid,
    # so fix the timeout and look again: all the remaining problems come together.
    assert any(":15 [step second]" in p and "not a duration" in p for p in found)
    path.write_text(text.replace("timeout: soon", "timeout: 5s"))
    found = problems_of(path)
    assert any(":13 [step second]: unknown action 'teleport'" in p for p in found)
    assert any(":14 [step second]: role 'witness' is not among" in p for p in found)
    assert len(found) >= 2


def test_malformed_yaml_gives_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("roles: [primary]", "roles: [primary"))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:") and "invalid YAML" in problem


def test_duplicate_keys_and_step_ids(tmp_path: Path) -> None:
    dup_key = write(tmp_path, GOOD.replace("version: 1\n", "version: 1\nversion: 2\n"), "a.yaml")
    assert any("key 'version' repeats the one on line 2" in p for p in problems_of(dup_key))
    dup_id = write(tmp_path, GOOD + GOOD.split("steps:\n")[1], "b.yaml")
    assert any("step id 'look' is used twice" in p for p in problems_of(dup_id))


def test_check_parameters_and_milestones_are_checked(tmp_path: Path) -> None:
    text = GOOD.replace(
        "      - check: pg.is_primary\n",
        "      - check: pg.replay_lag\n        with: {max: fast}\n",
    )
    text += "objectives:\n  rto: 5m\n"
    found = problems_of(write(tmp_path, text))
    assert any("[step look]" in p and "parameter 'max'" in p for p in found)
    assert any("milestone 'incident_declared' is marked by no step" in p for p in found)


def test_cli_validate_exits_2_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace("action: observe", "action: observe\n    bogus: 1"))
    good = write(tmp_path, GOOD, "good.yaml")
    result = drctl("validate", str(good), str(bad))
    assert result.returncode == 2
    assert f"{bad}:9 [step look]: unknown key 'bogus'" in result.stderr
    assert f"{good}: valid playbook" in result.stdout
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_validate_accepts_environments(tmp_path: Path) -> None:
    env = write(
        tmp_path,
        """\
        name: site
        protected: true
        nodes:
          db1: {role: primary, host: 127.0.0.1, port: 5432, oops: 1}
        """,
        "env.yaml",
    )
    result = drctl("validate", str(env))
    assert result.returncode == 2
    assert f"{env}:4: unknown key 'oops'" in result.stderr


def test_cli_schema_is_json_schema() -> None:
    result = drctl("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "drctl playbook"
    assert {"name", "kind", "steps"} <= set(schema["required"])
    jsonschema.Draft202012Validator.check_schema(schema)


def test_problems_in_shared_sections_name_the_line_where_they_are_written(tmp_path: Path) -> None:
    text = GOOD.replace(
        "steps:\n",
        "defaults: &slow {timeout: soon}\nsteps:\n",
    ).replace("    target: primary\n", "    target: primary\n    <<: *slow\n")
    path = write(tmp_path, text, "shared.yaml")
    found = problems_of(path)
    # The merged `timeout` is reported where it is written: the anchor's line.
    assert any(p.startswith(f"{path}:6 [step look]: ") and "not a duration" in p for p in found)


def test_cli_validate_refuses_an_app_node_without_http(tmp_path: Path) -> None:
    env = write(
        tmp_path,
        """\
        name: site
        nodes:
          db1: {role: primary, host: 127.0.0.1}
          his:
            role: app
            host: 127.0.0.1
        """,
        "env.yaml",
    )
    result = drctl("validate", str(env))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{env}:4: nodes.his: a node with role app needs an `http:` section" in result.stderr
