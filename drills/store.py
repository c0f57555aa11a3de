"""Where records live: ``$DRCTL_HOME/records``, one journal and one record per run.

A finished run writes ``ID.json`` beside its ``ID.journal.jsonl``. A run that died has only the
journal; reading it builds the record marked ``interrupted`` (and writes it, once the run is known
to be dead). Tamper evidence and other back ends come later; this store keeps records complete
and true.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from drills.errors import InputError
from drills.journal import read_journal
from drills.lock import holder_if_alive
from drills.record import Record, build_record


class RecordStore:
    def __init__(self, records_dir: Path, locks_dir: Path) -> None:
        self.dir = records_dir
        self.locks_dir = locks_dir
        self.dir.mkdir(parents=True, exist_ok=True)

    def journal_path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.journal.jsonl"

    def record_path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    def write(self, record: Record) -> Path:
        path = self.record_path(record.id)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(record.to_json(), encoding="utf-8")
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
        return path

    def load(self, run_id: str) -> Record:
        path = self.record_path(run_id)
        if path.exists():
            return Record.model_validate(json.loads(path.read_text(encoding="utf-8")))
        journal = self.journal_path(run_id)
        if not journal.exists():
            matches = [p for p in self.ids() if p.startswith(run_id)]
            if len(matches) == 1:
                return self.load(matches[0])
            hint = f" (matches: {', '.join(matches[:5])})" if matches else ""
            raise InputError(f"no record {run_id!r} in {self.dir}{hint}")
        events = read_journal(journal)
        environment = events[0]["environment"]["name"] if events else ""
        holder = holder_if_alive(self.locks_dir, environment)
        alive = holder is not None and holder.run_id == run_id
        record = build_record(events, alive=alive)
        if not alive:
            self.write(record)
        return record

    def ids(self) -> list[str]:
        """Run ids, newest first (ids begin with the UTC start time)."""
        names = {p.name.split(".")[0] for p in self.dir.glob("*.journal.jsonl")}
        return sorted(names, reverse=True)

    def list(self) -> list[Record]:
        return [self.load(run_id) for run_id in self.ids()]
