"""Where records live: an append-only, hash-chained, signed record store, plus the run journals.

- **Journals** stay files: ``$DRCTL_HOME/records/ID.journal.jsonl``, appended as a run goes.
- **Records** are sealed into one store when a run ends: SQLite by default
  (``$DRCTL_HOME/records/records.sqlite3``), PostgreSQL when ``DRCTL_RECORDS_URL`` is a
  ``postgresql://`` URL (``sqlite:///PATH`` also works). Both hold the same three tables:
  ``drctl_records`` (the chain: seq, id, kind, header, hash, signature, body), ``drctl_evidence``
  (the journal and attachments of each record, as bytes) and ``drctl_head`` (the signed newest
  seq and hash).

Sealing (see ``drills.records.chain`` for the format) happens in one transaction that holds the
store's write lock, so concurrent drills get consecutive numbers and one chain. A finished record
is never rewritten: the store refuses a second record with the same id, and triggers in both back
ends refuse UPDATE and DELETE on the chain and evidence tables. Triggers can be dropped by whoever
owns the database; the hash chain and the signatures are what make a change *visible* (``drctl
records verify``).

A run that died has only its journal; reading it builds the record marked ``interrupted``
without writing anything. Sealing it is an explicit step (``seal``: ``drctl records seal``, and
``drctl unlock`` once someone has looked at the environment). A record that cannot be sealed
because the store is unreachable (a PostgreSQL store in the site that failed) or cannot take it
(a full or read-only disk) stays in its journal until ``drctl records seal --pending``.

A journal that moved to a fallback place because the records directory could not take it
(:mod:`drills.records.fallback`) is found there: it is the run's journal, listed, shown and
sealed like the others, and sealing copies it back into the records directory first. A journal
that is empty or damaged is named by the readers (path and what is wrong), which go on with the
others.

The two back ends and their schemas are in :mod:`drills.records.backends`.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from drills.model.errors import InputError, RefusedError
from drills.model.record import Record, build_record
from drills.model.redact import redact, redact_data
from drills.records.annotation import Annotation, Merged, merge
from drills.records.backends import (
    Backend,
    Draft,
    StoreError,
    StoreUnavailable,
    open_backend,
)
from drills.records.chain import (
    Entry,
    Evidence,
    Verdict,
    canonical,
    make_head,
    make_header,
    sha256,
    verify_chain,
    verify_head,
)
from drills.records.fallback import JOURNAL_SUFFIX, fallback_journal, fallback_journals, remove
from drills.records.journal import JournalReading, inspect_journal
from drills.records.lock import holder_if_alive
from drills.records.signing import (
    PublicKey,
    SigningKey,
    keys_dir,
    load_signing_key,
    site_public_keys,
)

# StoreError and StoreUnavailable are defined in drills.records.backends (the back ends raise
# them, and this module imports the back ends); they are re-exported here, where callers look.
__all__ = ["JournalUnreadable", "RecordStore", "Sealed", "StoreError", "StoreUnavailable"]

log = logging.getLogger("drctl")

JOURNAL_EVIDENCE = "journal.jsonl"


@dataclass(frozen=True)
class Sealed:
    """A drill record as sealed, its place in the chain, and the annotations that refer to it."""

    record: Record
    entry: Entry
    annotations: list[tuple[Entry, Annotation]]
    location: str

    @property
    def merged(self) -> Merged:
        return merge([a for _, a in self.annotations])


class JournalUnreadable(InputError):
    """A run's journal from which no record can be built (empty, or its beginning lost)."""

    def __init__(self, reading: JournalReading) -> None:
        super().__init__(f"no record can be built from {reading.describe()}")
        self.reading = reading


class JournalNotBack(RefusedError):
    """A journal in a fallback place could not be copied back into the records directory."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- the store ---------------------------------------------------------------------------------


class RecordStore:
    def __init__(
        self,
        records_dir: Path,
        locks_dir: Path,
        *,
        url: str | None = None,
        keys: Path | None = None,
    ) -> None:
        self.dir = records_dir
        self.locks_dir = locks_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = url if url is not None else os.environ.get("DRCTL_RECORDS_URL") or None
        self.keys_dir = keys
        self._backend: Backend | None = None
        self._public_keys: dict[str, PublicKey] | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = open_backend(self.url, self.dir)
        return self._backend

    @property
    def location(self) -> str:
        return self.backend.location

    def journal_path(self, run_id: str) -> Path:
        """Where a run's journal is: in a fallback place if it moved there (it then holds
        every event; the copy in the records directory stopped short), else beside the store."""
        return fallback_journal(self.dir, run_id) or self.home_journal(run_id)

    def home_journal(self, run_id: str) -> Path:
        """Where a run's journal belongs: in the records directory."""
        return self.dir / f"{run_id}{JOURNAL_SUFFIX}"

    def _journal_ids(self) -> set[str]:
        names = {p.name[: -len(JOURNAL_SUFFIX)] for p in self.dir.glob(f"*{JOURNAL_SUFFIX}")}
        return names | set(fallback_journals(self.dir))

    def describe(self, run_id: str) -> str:
        """Where a record is, for a person: the store and its place in the chain."""
        try:
            entry = self.backend.get(run_id)
        except StoreError:
            entry = None
        if entry is None:
            return f"{self.journal_path(run_id)} (journal; not sealed yet)"
        return f"{self.location}, seq {entry.seq}, sha256 {entry.hash[:16]}…"

    # -- sealing ---------------------------------------------------------------------------

    def _keys(self) -> Path:
        """The keys beside the records (``$DRCTL_HOME/keys``) unless told otherwise."""
        if self.keys_dir is not None:
            return self.keys_dir
        if os.environ.get("DRCTL_KEYS_DIR"):
            return keys_dir()
        path = self.dir.parent / "keys"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def signing_key(self) -> SigningKey:
        return load_signing_key(self._keys(), create=True)

    def public_keys(self) -> dict[str, PublicKey]:
        if not self._public_keys:
            self._public_keys = site_public_keys(self._keys())
        return self._public_keys

    def _seal(self, drafts: list[Draft]) -> list[Entry]:
        key = self.signing_key()

        def seal(draft: Draft | None, seq: int, prev_hash: str) -> tuple[Entry | None, bytes, str]:
            at = _now()
            if draft is None:  # the signed head, after the last entry
                head = make_head(seq, prev_hash, key.key_id, at)
                return None, head, key.sign(head)
            header = make_header(
                seq=seq,
                record_id=draft.record_id,
                kind=draft.kind,
                refs=draft.refs,
                summary=draft.summary,
                record_hash=sha256(draft.body),
                prev_hash=prev_hash,
                key_id=key.key_id,
                sealed_at=at,
                evidence=[Evidence(n, sha256(data), len(data)) for n, data in draft.evidence],
            )
            entry = Entry(
                seq=seq,
                id=draft.record_id,
                kind=draft.kind,
                header=header,
                hash=sha256(header),
                signature=key.sign(header),
                body=draft.body,
            )
            return entry, b"", ""

        return self.backend.append(drafts, seal)

    def write(self, record: Record) -> Entry | None:
        """Seal a finished record, with its journal as evidence. Sealing the same content twice
        is a no-op; a different record under a sealed id is refused (a correction is a new
        record: ``drctl records annotate``). A store that cannot be reached is logged, not
        raised: the journal keeps the run, and the next read of the store seals it."""
        try:
            self._journal_whole(record)
            return self._write(record)
        except StoreUnavailable as exc:
            log.warning("record %s not sealed yet: %s", record.id, exc)
            return None

    def _journal_whole(self, record: Record) -> None:
        """A finished record is sealed only with its whole journal as evidence: one that could
        be kept nowhere (``drills.records.journal``: in memory only) waits, unsealed."""
        path = self.journal_path(record.id)
        if record.status == "interrupted" or not path.exists():
            return
        if not any(e.get("event") == "run_ended" for e in inspect_journal(path).events):
            raise StoreUnavailable(
                f"its journal {path} does not hold the run's end (it could not be written "
                "whole), so the record is not sealed with less evidence than it states"
            )

    def write_many(self, records: list[Record]) -> list[Entry]:
        """Seal many finished records in one transaction (imports, benchmarks)."""
        return self._seal([self._draft(r) for r in records])

    def _write(self, record: Record) -> Entry:
        draft = self._draft(record)
        existing = self.backend.get(record.id)
        if existing is not None:
            if existing.body == draft.body:
                return existing
            raise RefusedError(
                f"record {record.id} is already sealed (seq {existing.seq}) and is never "
                "rewritten; add a correction with `drctl records annotate`"
            )
        try:
            return self._seal([draft])[0]
        except StoreError:
            again = self.backend.get(record.id)
            if again is not None and again.body == draft.body:  # sealed meanwhile elsewhere
                return again
            raise

    def _draft(self, record: Record) -> Draft:
        if record.status == "running":
            raise ValueError(f"record {record.id} is still running: only finished runs are sealed")
        data = redact_data(record.model_dump(mode="json", by_alias=True))
        body = canonical(data)
        journal = self.journal_path(record.id)
        evidence = []
        if journal.exists():
            text = journal.read_text(encoding="utf-8", errors="replace")
            evidence.append((JOURNAL_EVIDENCE, redact(text).encode("utf-8")))
        return Draft(
            record_id=record.id,
            kind="drill",
            refs=[],
            summary={
                "playbook": str(record.playbook.get("name", "")),
                "environment": str(record.environment.get("name", "")),
                "status": record.status,
                "mode": record.mode,
                "started_at": record.started_at,
            },
            body=body,
            evidence=evidence,
        )

    def annotate(self, annotation: Annotation, attachments: list[tuple[str, bytes]]) -> Entry:
        drill = self.backend.get(annotation.refers_to)
        if drill is None or drill.kind != "drill":
            raise InputError(f"no sealed drill record {annotation.refers_to!r} to annotate")
        body = canonical(redact_data(annotation.model_dump(mode="json", by_alias=True)))
        draft = Draft(
            record_id=annotation.id,
            kind="annotation",
            refs=[annotation.refers_to],
            summary={"by": annotation.by, "fields": ",".join(annotation.given())},
            body=body,
            evidence=attachments,
        )
        return self._seal([draft])[0]

    # -- reading ---------------------------------------------------------------------------

    def _checked(self, entry: Entry) -> Entry:
        """A light check on every read: the content still hashes to what was signed."""
        assert entry.body is not None
        problems = []
        if entry.fields.get("id") != entry.id:
            problems.append("its id differs from its signed header")
        if sha256(entry.header) != entry.hash:
            problems.append("its header changed after sealing")
        if sha256(entry.body) != entry.fields.get("record_hash"):
            problems.append("its content changed after sealing")
        keys = self.public_keys()
        key = keys.get(str(entry.fields.get("key_id")))
        if key is not None and not key.verify(entry.signature, entry.header):
            problems.append("its signature does not verify")
        if problems:
            raise StoreError(
                f"record {entry.id} (seq {entry.seq}) fails verification: {'; '.join(problems)}. "
                "Run `drctl records verify` for the whole chain."
            )
        return entry

    def resolve(self, run_id: str) -> str:
        """A full drill id from an id or a unique prefix of one."""
        if self.journal_path(run_id).exists() or self.backend.get(run_id) is not None:
            return run_id
        matches = [i for i in self.ids() if i.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        hint = f" (matches: {', '.join(matches[:5])})" if matches else ""
        raise InputError(f"no record {run_id!r} in {self.location}{hint}")

    def load(self, run_id: str) -> Record:
        """A drill record: as sealed, or built from its journal when it is not sealed yet.
        Reading never writes: sealing an interrupted run is ``seal`` (``drctl records seal``,
        ``drctl unlock``)."""
        try:
            run_id = self.resolve(run_id)
            entry = self.backend.get(run_id)
        except StoreUnavailable as exc:
            if not self.journal_path(run_id).exists():
                raise
            log.warning("%s; showing the record built from its journal, unsealed", exc)
            return self._from_journal(run_id)
        if entry is not None:
            if entry.kind != "drill":
                raise InputError(f"{run_id} is an {entry.kind}, not a drill record")
            return Record.model_validate_json(self._checked(entry).body or b"")
        return self._from_journal(run_id)

    def reading(self, run_id: str) -> JournalReading:
        """A run's journal as read, with what is wrong with it (if anything)."""
        return inspect_journal(self.journal_path(run_id))

    def _from_journal(self, run_id: str) -> Record:
        reading = self.reading(run_id)
        if not reading.usable:
            raise JournalUnreadable(reading)
        events = reading.events
        try:
            environment = events[0]["environment"]["name"]
            holder = holder_if_alive(self.locks_dir, environment)
            alive = holder is not None and holder.run_id == run_id
            return build_record(events, alive=alive)
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's errors are ValueErrors
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            raise JournalUnreadable(
                JournalReading(reading.path, events, f"its events do not make a record ({detail})")
            ) from exc

    def seal(self, run_id: str) -> Record:
        """Seal a finished run that is only in its journal (a run that died: ``interrupted``).
        The one place a record is sealed after its run; refuses a run that is still going."""
        run_id = self.resolve(run_id)
        try:
            if self.backend.get(run_id) is not None:
                return self.load(run_id)
            record = self._from_journal(run_id)
            if record.status == "running":
                raise RefusedError(f"run {run_id} is still going: it seals its own record")
            self._seal_from_journal(record)
        except StoreUnavailable as exc:
            raise RefusedError(
                f"record {run_id} cannot be sealed yet: {exc}; its journal stays at "
                f"{self.journal_path(run_id)}, and `drctl records seal {run_id}` seals it later"
            ) from exc
        return record

    def _seal_from_journal(self, record: Record) -> Entry:
        """Seal a record built from its journal. A journal in a fallback place is first copied
        back into the records directory (refused while that cannot take it), and removed from
        the fallback place once the record is sealed."""
        moved = fallback_journal(self.dir, record.id)
        if moved is not None:
            self._bring_back(moved, record.id)
        entry = self._write(record)
        if moved is not None:
            remove(moved)
            log.info("record %s sealed; its fallback journal %s was removed", record.id, moved)
        return entry

    def _bring_back(self, moved: Path, run_id: str) -> None:
        home = self.home_journal(run_id)
        partial = home.with_name(f".{home.name}.restoring")
        try:
            data = moved.read_bytes()
            with partial.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            partial.replace(home)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise JournalNotBack(
                f"record {run_id} cannot be sealed yet: its journal is at {moved} (the records "
                f"directory could not take it) and copying it back to {home} failed "
                f"({exc.strerror or exc}); free some space there and seal it again"
            ) from exc

    def unsealed(self) -> list[str]:
        """Runs that have a journal and no sealed record (read only)."""
        sealed = set(self.backend.ids("drill"))
        return sorted(self._journal_ids() - sealed)

    def moved_journals(self) -> dict[str, Path]:
        """Runs whose journal is in a fallback place (the records directory could not take it)."""
        return fallback_journals(self.dir)

    def journal_problems(self) -> list[JournalReading]:
        """The unsealed runs' journals that are damaged (empty, cut short, their beginning
        lost), each with what is wrong; a run still going is not judged."""
        found = []
        for run_id in self.unsealed():
            reading = self.reading(run_id)
            if reading.problem is not None:
                found.append(reading)
        return found

    def sealed(self, run_id: str) -> Sealed:
        """A drill record as sealed, with its annotations."""
        run_id = self.resolve(run_id)
        record = self.load(run_id)
        entry = self.backend.get(run_id)
        if entry is None:
            raise InputError(
                f"record {run_id} is not sealed ({record.status}): "
                + (
                    "the run is still going"
                    if record.status == "running"
                    else f"`drctl records seal {run_id}` seals it"
                )
            )
        annotations = [
            (e, Annotation.model_validate_json(self._checked(e).body or b""))
            for e in self.backend.referring(run_id)
            if e.kind == "annotation" and run_id in e.refs
        ]
        return Sealed(record, self._checked(entry), annotations, self.location)

    def evidence(self, entry: Entry, name: str) -> bytes | None:
        return self.backend.evidence(entry.seq, name)

    def ids(self) -> list[str]:
        """Drill run ids, newest first (ids begin with the UTC start time)."""
        names = self._journal_ids()
        names.update(self.backend.ids("drill"))
        return sorted(names, reverse=True)

    def seal_pending(self, environment: str | None = None) -> list[str]:
        """Seal every finished run (of ``environment``, if given) that has a journal but no
        sealed record yet. Returns the ids sealed."""
        done = []
        for run_id in self.unsealed():
            try:
                record = self._from_journal(run_id)
            except JournalUnreadable as exc:
                log.warning("%s; left as it is", exc)
                continue
            if record.status == "running":
                continue
            if environment is not None and record.environment.get("name") != environment:
                continue
            try:
                self._seal_from_journal(record)
            except JournalNotBack as exc:
                log.warning("%s", exc)
                continue
            done.append(run_id)
        return done

    def list(self) -> list[Record]:
        """Every record, newest first; a journal no record can be built from is left out (and
        logged: :meth:`listing` says which)."""
        records, problems = self.listing()
        for problem in problems:
            log.warning("%s", problem.describe())
        return records

    def listing(self) -> tuple[builtins.list[Record], builtins.list[JournalReading]]:
        """Every record, newest first, and the journals no record could be built from."""
        records, problems = [], []
        for run_id in self.ids():
            try:
                records.append(self.load(run_id))
            except JournalUnreadable as exc:
                problems.append(exc.reading)
        return records, problems

    def entries(self, *, with_body: bool = False) -> Iterator[Entry]:
        return self.backend.entries(with_body=with_body)

    # -- verification ----------------------------------------------------------------------

    def verify(
        self, keys: dict[str, PublicKey] | None = None, *, only: str | None = None
    ) -> Verdict:
        """Check the whole chain: every header, link and signature, and the signed head; and
        every record's content and evidence (or, with ``only``, that drill's and its
        annotations')."""
        keys = self.public_keys() if keys is None else keys
        verdict = Verdict()
        if not keys:
            verdict.fail(None, None, "no public key to check signatures with (--public-key FILE)")
        if only is not None:
            only = self.resolve(only)
            if self.backend.get(only) is None:
                raise InputError(f"record {only} is not sealed yet")

        def wanted(entry: Entry) -> bool:
            return only is None or entry.id == only or only in entry.refs

        evidence = self.backend.all_evidence()
        verify_chain(
            self.backend.entries(with_body=True),
            keys,
            want_body=wanted,
            evidence_of=lambda e, name: evidence.get((e.seq, name)),
            verdict=verdict,
        )
        head = self.backend.head()
        verify_head(verdict, head[0] if head else None, head[1] if head else None, keys)
        return verdict
