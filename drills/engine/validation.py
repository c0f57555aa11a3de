"""What the playbook models cannot check alone: names, parameters and references.

Every problem is collected, located (file, line, step) and returned at once.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from drills.engine.catalogue import Catalogue, default_catalogue
from drills.engine.documents import Loc, YamlDocument
from drills.model.errors import Problem
from drills.model.playbook import Check, Playbook, Step

RUN_MILESTONES = {"run_started"}


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
