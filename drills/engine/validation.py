"""What the playbook models cannot check alone: names, parameters and references.

Every problem is collected, located (file, line, step) and returned at once.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from drills.engine.catalogue import Catalogue, default_catalogue
from drills.engine.documents import Loc, YamlDocument
from drills.model.errors import Problem
from drills.model.playbook import Check, Kind, OnFailure, Playbook, Step

RUN_MILESTONES = {"run_started"}

# Actions that back up what a change touches, or prove that the backup restores (its restore
# test, reused from the backup playbooks): in a change (`kind: change`) one of them comes before
# the first step that applies the change.
BACKUP_ACTIONS = frozenset(
    {
        "files.backup",
        "pg.basebackup",
        "pg.verifybackup",
        "pg.restore_scratch",
        "pg.dump",
        "pg.verifydump",
        "pg.restore_dump_scratch",
        "pg.reconcile_scratch",
        "pg.drop_scratch",
    }
)


def _params_problems(
    doc: YamlDocument, loc: Loc, model: type[BaseModel], params: dict[str, object], what: str
) -> list[Problem]:
    try:
        model.model_validate(params)
    except ValidationError as exc:
        out = []
        for error in exc.errors():
            sub = (*loc, "with", *error["loc"])
            key = error["loc"][-1] if error["loc"] else ""
            if error["type"] == "extra_forbidden":
                message = f"{what}: unknown parameter {key!r}"
            elif error["type"] == "missing":
                message = f"{what}: missing parameter {key!r}"
            else:
                message = f"{what}: parameter {key!r}: {error['msg']}"
            out.append(doc.problem(sub, message))
        return out
    return []


def _check_problems(
    doc: YamlDocument,
    loc: Loc,
    check: Check,
    playbook: Playbook,
    default_target: str | None,
    catalogue: Catalogue,
) -> list[Problem]:
    problems = []
    spec = catalogue.checks.get(check.check)
    if spec is None:
        known = ", ".join(sorted(catalogue.checks))
        problems.append(
            doc.problem((*loc, "check"), f"unknown check {check.check!r} (known: {known})")
        )
    else:
        problems += _params_problems(doc, loc, spec.params, check.with_, f"check {check.check}")
    target = check.target or default_target
    if target is None:
        problems.append(doc.problem(loc, f"check {check.check} needs a target role"))
    elif target not in playbook.roles:
        problems.append(doc.problem((*loc, "target"), _role_message(target, playbook)))
    for key in ("source", "primary"):
        role = check.with_.get(key)
        if isinstance(role, str) and role not in playbook.roles:
            problems.append(doc.problem((*loc, "with", key), _role_message(role, playbook)))
    return problems


def _role_message(role: str, playbook: Playbook) -> str:
    return f"role {role!r} is not among the playbook's roles ({', '.join(playbook.roles)})"


def _step_problems(
    doc: YamlDocument, loc: Loc, step: Step, playbook: Playbook, catalogue: Catalogue
) -> list[Problem]:
    problems = []
    spec = catalogue.actions.get(step.action)
    if spec is None:
        known = ", ".join(sorted(catalogue.actions))
        problems.append(
            doc.problem((*loc, "action"), f"unknown action {step.action!r} (known: {known})")
        )
    else:
        problems += _params_problems(doc, loc, spec.params, step.with_, f"action {step.action}")
        role = step.with_.get("source")
        if isinstance(role, str) and role not in playbook.roles:
            problems.append(doc.problem((*loc, "with", "source"), _role_message(role, playbook)))
    if step.target not in playbook.roles:
        problems.append(doc.problem((*loc, "target"), _role_message(step.target, playbook)))
    for index, check in enumerate(step.verify):
        problems += _check_problems(
            doc, (*loc, "verify", index), check, playbook, step.target, catalogue
        )
    if step.verify and step.within <= 0:
        problems.append(doc.problem((*loc, "within"), "checks need a deadline above 0s"))
    return problems


def playbook_problems(
    playbook: Playbook, doc: YamlDocument, catalogue: Catalogue | None = None
) -> list[Problem]:
    catalogue = catalogue or default_catalogue()
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for section in ("steps", "rollback"):
        for index, step in enumerate(getattr(playbook, section)):
            loc: Loc = (section, index)
            if step.id in seen:
                problems.append(doc.problem((*loc, "id"), f"step id {step.id!r} is used twice"))
            seen[step.id] = index
            problems += _step_problems(doc, loc, step, playbook, catalogue)
            if section == "steps" and step.undoes:
                problems.append(doc.problem((*loc, "undoes"), "`undoes` belongs on rollback steps"))
            if (
                section == "rollback"
                and step.undoes
                and step.undoes not in {s.id for s in playbook.steps}
            ):
                problems.append(
                    doc.problem((*loc, "undoes"), f"undoes {step.undoes!r}, which is no step")
                )
    for index, check in enumerate(playbook.preconditions):
        problems += _check_problems(doc, ("preconditions", index), check, playbook, None, catalogue)
    if playbook.kind == Kind.change:
        problems += change_problems(playbook, doc, catalogue)
    marked = {s.milestone for s in playbook.steps if s.milestone} | RUN_MILESTONES
    for name, objective in playbook.objectives.items():
        for end in (objective.from_, objective.to):
            if end is not None and end not in marked:
                problems.append(
                    doc.problem(
                        ("objectives", name),
                        f"objective {name}: milestone {end!r} is marked by no step "
                        f"(marked: {', '.join(sorted(marked))})",
                    )
                )
        if objective.measure == "rpo" and not playbook.measurements.canary:
            problems.append(
                doc.problem(
                    ("objectives", name), f"objective {name} measures rpo: set measurements.canary"
                )
            )
        if objective.measure == "service_outage" and not playbook.measurements.service_probe:
            problems.append(
                doc.problem(
                    ("objectives", name),
                    f"objective {name} measures service_outage: set measurements.service_probe",
                )
            )
        if objective.measure == "write_outage" and not playbook.measurements.write_probe:
            problems.append(
                doc.problem(
                    ("objectives", name),
                    f"objective {name} measures write_outage: set measurements.write_probe",
                )
            )
    m = playbook.measurements
    if m.service_probe and m.service_role not in playbook.roles:
        problems.append(
            doc.problem(("measurements", "service_role"), _role_message(m.service_role, playbook))
        )
    writers = playbook.measurements.canary or playbook.measurements.write_probe
    for role in playbook.measurements.writer_roles if writers else []:
        if role not in playbook.roles:
            problems.append(
                doc.problem(("measurements", "writer_roles"), _role_message(role, playbook))
            )
    return problems


# -- a change: backup, apply, verify, roll back ------------------------------------------------


def change_stage(action: str, catalogue: Catalogue) -> str:
    """What a step of a change does, by its action: ``backup`` (it backs up, or tests the
    backup), ``apply`` (it changes something), or ``check`` (it observes: verification)."""
    if action in BACKUP_ACTIONS:
        return "backup"
    spec = catalogue.actions.get(action)
    return "apply" if spec is not None and spec.changes else "check"


def change_problems(playbook: Playbook, doc: YamlDocument, catalogue: Catalogue) -> list[Problem]:
    """A change backs up what it touches before it applies anything, verifies every step that
    applies it, and can undo each of them, verifiably; every rollback step undoes a step."""
    problems: list[Problem] = []
    stages = [change_stage(step.action, catalogue) for step in playbook.steps]
    applying = [i for i, stage in enumerate(stages) if stage == "apply"]
    if not applying:
        problems.append(
            doc.problem(
                ("steps",),
                "a change applies something: no step's action changes anything "
                "(sql, shell, release.switch, ...)",
            )
        )
    first = applying[0] if applying else len(stages)
    backups = [i for i in range(first) if stages[i] == "backup"]
    if applying and not backups:
        step = playbook.steps[first]
        problems.append(
            doc.problem(
                ("steps", first, "action"),
                f"step {step.id} applies the change (action {step.action}) but nothing backs up "
                "what it touches before it: add a backup step first (files.backup, pg.dump, "
                "pg.basebackup, ...)",
            )
        )
    undone_by: dict[str, list[Step]] = {}
    for index, step in enumerate(playbook.rollback):
        if step.undoes is None:
            problems.append(
                doc.problem(
                    ("rollback", index),
                    f"rollback step {step.id} undoes no step: in a change every rollback step "
                    "names the step it undoes (`undoes:`), so that it runs only once that step "
                    "has started",
                )
            )
        else:
            undone_by.setdefault(step.undoes, []).append(step)
    for index, step in enumerate(playbook.steps):
        loc: Loc = ("steps", index)
        if stages[index] == "backup" and step.on_failure == OnFailure.continue_:
            problems.append(
                doc.problem(
                    (*loc, "on_failure"),
                    f"step {step.id} backs up what the change touches: on_failure continue would "
                    "apply the change without its backup (use rollback or abort)",
                )
            )
        if index >= first and step.on_failure != OnFailure.rollback:
            problems.append(
                doc.problem(
                    (*loc, "on_failure"),
                    f"step {step.id} runs once the change is being applied: its on_failure must "
                    "be rollback (a failed change is rolled back automatically)",
                )
            )
        if stages[index] != "apply":
            continue
        if not step.verify:
            problems.append(
                doc.problem(
                    loc,
                    f"step {step.id} applies the change (action {step.action}) without "
                    "verification: give it `verify:` checks that show the change took effect",
                )
            )
        undo = undone_by.get(step.id, [])
        if not undo:
            problems.append(
                doc.problem(
                    loc,
                    f"step {step.id} applies the change but no rollback step undoes it "
                    f"(`undoes: {step.id}`): a failed change could not be rolled back",
                )
            )
        elif not any(s.verify for s in undo):
            problems.append(
                doc.problem(
                    loc,
                    f"no rollback step that undoes {step.id} verifies the rollback: give one of "
                    f"them ({', '.join(s.id for s in undo)}) `verify:` checks",
                )
            )
    return problems
