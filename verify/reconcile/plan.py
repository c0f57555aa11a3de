"""Which tables are compared, and how: both sides' descriptions agreed into one ``TablePlan`` per
table. Every problem (a missing table or schema, columns that differ) is reported at once.

Engine-neutral: it asks the sessions (``verify.reconcile.model.Session``) and knows no SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from drills.model.errors import InputError
from verify.reconcile.engine import Pair
from verify.reconcile.model import Side, TableMeta, TablePlan, TableRef, parse_table_name


def plan_tables(
    pair: Pair,
    tables: list[str] | None,
    schemas: list[str] | None,
    exclude_schemas: Sequence[str],
    fold: Callable[[str], str],
) -> list[TablePlan]:
    """The tables to compare, checked on both sides. Every problem is reported at once."""
    problems: list[str] = []
    only_on: dict[TableRef, Side] = {}
    if schemas is not None and not schemas:
        schemas = None
    if schemas:
        missing = pair.same(lambda s: s.missing_schemas(list(schemas)))
        for side, gone in zip(("source", "target"), missing, strict=True):
            problems += [f"schema {name!r} does not exist in the {side}" for name in gone]
        if problems:
            raise InputError("\n".join(problems))
    named: list[tuple[TableRef, TableRef]] = []  # (source's table, target's table)
    if tables:
        defaults = pair.source.default_schema(), pair.target.default_schema()
        for text in tables:
            parsed = parse_table_name(text, fold=fold)
            if isinstance(parsed, str):
                problems.append(parsed)
            elif parsed.schema:
                named.append((parsed, parsed))
            elif not schemas:
                # Each side's own default schema (Oracle: the user's; PostgreSQL: public).
                named.append(
                    (TableRef(defaults[0], parsed.name), TableRef(defaults[1], parsed.name))
                )
            else:
                for schema in schemas:
                    if pair.source.describe(TableRef(schema, parsed.name)) is not None:
                        named.append((TableRef(schema, parsed.name),) * 2)
                        break
                else:
                    problems.append(
                        f"table {parsed.name} does not exist in the source "
                        f"({pair.source.label}; searched schema {', '.join(schemas)})"
                    )
    else:
        listed_source, listed_target = pair.same(lambda s: s.list_tables(schemas, exclude_schemas))
        in_source, in_target = set(listed_source), set(listed_target)
        named = [(r, r) for r in sorted(in_source | in_target, key=lambda r: (r.schema, r.name))]
        only_on = {r: "source" for r in in_source - in_target}
        only_on.update({r: "target" for r in in_target - in_source})
        if not named:
            where = f"schema(s) {', '.join(schemas)}" if schemas else "any schema"
            problems.append(f"no tables to compare: none in {where} on either side")
    plans: list[TablePlan] = []
    seen: set[tuple[TableRef, TableRef]] = set()
    for ref, target_ref in named:
        if (ref, target_ref) in seen:
            continue
        seen.add((ref, target_ref))
        if ref in only_on:
            present: Side = only_on[ref]
            absent: Side = "target" if present == "source" else "source"
            plans.append(
                TablePlan(ref, (), (), f"the table does not exist in the {absent}", absent)
            )
            continue
        source_meta, target_meta = pair.both(
            lambda s, ref=ref: s.describe(ref),  # type: ignore[misc]
            lambda s, ref=target_ref: s.describe(ref),  # type: ignore[misc]
        )
        for side, meta, session, side_ref in (
            ("source", source_meta, pair.source, ref),
            ("target", target_meta, pair.target, target_ref),
        ):
            if meta is None:
                problems.append(
                    f"table {side_ref.display} does not exist in the {side} ({session.label})"
                )
            elif meta.kind not in ("table", "partitioned table"):
                problems.append(f"{side_ref.display} in the {side} is a {meta.kind}, not a table")
        if source_meta is None or target_meta is None:
            continue
        plan = agree(source_meta, target_meta)
        if isinstance(plan, str):
            problems.append(plan)
        else:
            plans.append(plan)
    if problems:
        raise InputError("\n".join(problems))
    return plans


def agree(source: TableMeta, target: TableMeta) -> TablePlan | str:
    """The plan both sides' descriptions allow, or why the table cannot be compared."""
    name = source.ref.display
    s_cols = {c.name: c for c in source.columns}
    t_cols = {c.name: c for c in target.columns}
    only_source = [c for c in s_cols if c not in t_cols]
    only_target = [c for c in t_cols if c not in s_cols]
    types = [
        f"{c} (source {s_cols[c].type}, target {t_cols[c].type})"
        for c in s_cols
        if c in t_cols and s_cols[c].type != t_cols[c].type
    ]
    if only_source or only_target or types:
        parts = []
        if only_source:
            parts.append("only in the source: " + ", ".join(only_source))
        if only_target:
            parts.append("only in the target: " + ", ".join(only_target))
        if types:
            parts.append("different types: " + ", ".join(types))
        return f"table {name}: the columns differ: " + "; ".join(parts)
    if not source.columns:
        return f"table {name} has no columns to compare"
    columns = source.columns  # the source's order, on both sides
    if not source.key and not target.key:
        return TablePlan(
            source.ref,
            columns,
            (),
            "no primary key: compared by row count and whole-table checksum; "
            "differing rows cannot be named",
            target_ref=target.ref,
        )
    if source.key != target.key:
        return TablePlan(
            source.ref,
            columns,
            (),
            f"the primary keys differ (source: {', '.join(source.key) or 'none'}; target: "
            f"{', '.join(target.key) or 'none'}): compared by row count and whole-table checksum",
            target_ref=target.ref,
        )
    return TablePlan(
        source.ref, columns, tuple(s_cols[k] for k in source.key), target_ref=target.ref
    )
