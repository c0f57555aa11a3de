"""The hash chain: how a sealed record is written down and how it is checked.

A store is one chain of *entries*, numbered from 1. Each entry has

- a **body**: the record (a drill record or an annotation) as canonical JSON bytes, stored exactly
  as sealed;
- a **header**: a small JSON object that carries the body's SHA-256 (``record_hash``), the
  previous entry's hash (``prev_hash``; 64 zeros for entry 1), the entry's number, the record's id
  and kind, the ids it refers to, a few fields that lists show (playbook, environment, status,
  started_at), the SHA-256 of each piece of evidence (the run's journal, attachments), when it was
  sealed and the id of the key that signed it;
- a **hash**: SHA-256 of the header's canonical JSON (the next entry's ``prev_hash``);
- a **signature**: Ed25519 over the header's canonical JSON bytes, base64.

Changing one byte of a body changes its SHA-256, which no longer matches the signed header;
changing a header breaks its signature and the next entry's ``prev_hash``; deleting an entry leaves
a gap in the numbers and a broken link; swapping two breaks both. Deleting the *last* entries is
caught by the signed head (the store's newest seq and hash, signed on every append, and the signed
manifest of an exported bundle) — unless someone also restores an older signed head, which is why
``verify`` prints the head: an auditor who noted it earlier can compare.

Canonical JSON (what is hashed and signed): ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)`` encoded as UTF-8 — sorted keys, no whitespace, UTF-8 text
rather than \\u escapes. It follows RFC 8785 (JCS) in spirit: one byte sequence per value, so a
hash means one thing. Where it differs (JCS sorts keys by UTF-16 code units and formats numbers
the ECMAScript way; Python's float repr writes ``1.0`` and ``1e-07``), it does not matter here,
because bodies are *kept as the exact bytes that were hashed*: a verifier in any language hashes
the stored bytes and never re-serialises them. Headers hold only strings, integers, lists and
nulls with ASCII keys, where this form and JCS agree, so a header can be re-serialised anywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from drills.records.signing import PublicKey

HEADER_SCHEMA = "drctl.seal/1"
HEAD_SCHEMA = "drctl.head/1"
GENESIS = "0" * 64


def canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Evidence:
    name: str
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Entry:
    """One sealed entry as stored. ``body`` is None where only the header chain is at hand."""

    seq: int
    id: str
    kind: str
    header: bytes
    hash: str
    signature: str
    body: bytes | None = None

    @cached_property
    def fields(self) -> dict[str, Any]:
        value = json.loads(self.header)
        return value if isinstance(value, dict) else {}

    @property
    def refs(self) -> list[str]:
        return list(self.fields.get("refs") or [])

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.fields.get("summary") or {})

    @property
    def evidence(self) -> list[Evidence]:
        return [
            Evidence(str(e["name"]), str(e["sha256"]), int(e["size"]))
            for e in self.fields.get("evidence") or []
        ]

    def chain_line(self) -> bytes:
        """The entry as one line of a bundle's ``chain.jsonl`` (its header embedded verbatim)."""
        return canonical({"hash": self.hash, "header": self.fields, "signature": self.signature})

    @classmethod
    def from_chain_line(cls, line: bytes) -> Entry:
        item = json.loads(line)
        header = canonical(item["header"])
        fields = item["header"]
        return cls(
            seq=int(fields.get("seq", 0)),
            id=str(fields.get("id", "")),
            kind=str(fields.get("kind", "")),
            header=header,
            hash=str(item["hash"]),
            signature=str(item["signature"]),
        )


def make_header(
    *,
    seq: int,
    record_id: str,
    kind: str,
    refs: list[str],
    summary: dict[str, str],
    record_hash: str,
    prev_hash: str,
    key_id: str,
    sealed_at: str,
    evidence: list[Evidence],
) -> bytes:
    return canonical(
        {
            "schema": HEADER_SCHEMA,
            "seq": seq,
            "id": record_id,
            "kind": kind,
            "refs": refs,
            "summary": {k: str(v) for k, v in summary.items()},
            "record_hash": record_hash,
            "prev_hash": prev_hash,
            "evidence": [e.as_dict() for e in evidence],
            "sealed_at": sealed_at,
            "key_id": key_id,
        }
    )


def make_head(seq: int, head_hash: str, key_id: str, at: str) -> bytes:
    return canonical(
        {"schema": HEAD_SCHEMA, "seq": seq, "hash": head_hash, "key_id": key_id, "at": at}
    )


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    seq: int | None
    record_id: str | None
    message: str

    def __str__(self) -> str:
        if self.seq is None and self.record_id is None:
            return self.message
        where = f"seq {self.seq}" if self.seq is not None else ""
        if self.record_id:
            where += f"{', ' if where else ''}record {self.record_id}"
        return f"{where}: {self.message}"


@dataclass
class Verdict:
    entries: int = 0
    bodies: int = 0
    evidence: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    key_ids: set[str] = field(default_factory=set)
    failures: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, seq: int | None, record_id: str | None, message: str) -> None:
        self.failures.append(Finding(seq, record_id, message))


BodyOf = Callable[[Entry], bytes | None]
EvidenceOf = Callable[[Entry, str], bytes | None]


def verify_chain(
    entries: Iterable[Entry],
    keys: dict[str, PublicKey],
    *,
    want_body: Callable[[Entry], bool] = lambda e: True,
    body_of: BodyOf | None = None,
    evidence_of: EvidenceOf | None = None,
    verdict: Verdict | None = None,
) -> Verdict:
    """Check every entry's place in the chain, its header hash and signature, and (for the entries
    ``want_body`` selects) that its body and evidence still hash to what the header says.

    The link to the previous entry is checked against the previous entry's *stored* hash, so one
    altered entry is reported once, as itself, and the entries after it are still checked.
    """
    verdict = verdict or Verdict()
    expected_seq = 1
    prev_hash = GENESIS
    for entry in entries:
        verdict.entries += 1
        seq, rid = entry.seq, entry.id
        try:
            fields = entry.fields
        except ValueError:
            verdict.fail(seq, rid, "its header is not valid JSON")
            prev_hash, expected_seq = entry.hash, seq + 1
            continue
        if fields.get("schema") != HEADER_SCHEMA:
            verdict.fail(seq, rid, f"unknown header schema {fields.get('schema')!r}")
        header_seq = fields.get("seq")
        if header_seq != seq or fields.get("id") != rid or fields.get("kind") != entry.kind:
            verdict.fail(
                seq,
                rid,
                f"stored as seq {seq} {entry.kind} {rid}, but its signed header says seq "
                f"{header_seq} {fields.get('kind')} {fields.get('id')}",
            )
        if seq != expected_seq:
            if seq > expected_seq:
                missing = (
                    f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}-{seq - 1}"
                )
                verdict.fail(
                    seq, rid, f"seq {missing} is missing before it: a record was deleted or moved"
                )
            else:
                verdict.fail(seq, rid, f"out of order: seq {seq} comes where {expected_seq} should")
        if fields.get("prev_hash") != prev_hash:
            verdict.fail(
                seq,
                rid,
                "its link to the previous record is broken (prev_hash "
                f"{str(fields.get('prev_hash'))[:12]}… ≠ {prev_hash[:12]}…): a record before it "
                "was deleted, reordered or changed",
            )
        actual = sha256(entry.header)
        if actual != entry.hash:
            verdict.fail(seq, rid, "its header changed after sealing (the header hash differs)")
        key_id = str(fields.get("key_id"))
        key = keys.get(key_id)
        if key is None:
            verdict.fail(seq, rid, f"signed by key {key_id}, which is not among the keys given")
        elif not key.verify(entry.signature, entry.header):
            verdict.fail(seq, rid, f"its signature does not verify with key {key_id}")
        else:
            verdict.key_ids.add(key_id)
        if want_body(entry):
            body = entry.body if entry.body is not None else (body_of(entry) if body_of else None)
            if body is None:
                verdict.fail(seq, rid, "its record content is missing")
            else:
                verdict.bodies += 1
                if sha256(body) != fields.get("record_hash"):
                    verdict.fail(
                        seq,
                        rid,
                        "its content changed after sealing (sha256 "
                        f"{sha256(body)[:12]}… ≠ sealed {str(fields.get('record_hash'))[:12]}…)",
                    )
            if evidence_of is not None:
                for item in entry.evidence:
                    data = evidence_of(entry, item.name)
                    if data is None:
                        verdict.fail(seq, rid, f"its evidence {item.name} is missing")
                        continue
                    verdict.evidence += 1
                    if sha256(data) != item.sha256:
                        verdict.fail(seq, rid, f"its evidence {item.name} changed after sealing")
        prev_hash = entry.hash
        expected_seq = max(expected_seq, seq) + 1
        verdict.head_seq, verdict.head_hash = seq, entry.hash
    return verdict


def verify_head(
    verdict: Verdict, head: bytes | None, signature: str | None, keys: dict[str, PublicKey]
) -> None:
    """The signed head must name the last entry: anything after it was deleted otherwise."""
    if head is None or signature is None:
        if verdict.entries:
            verdict.fail(None, None, "the chain's signed head is missing")
        return
    try:
        fields = json.loads(head)
    except ValueError:
        verdict.fail(None, None, "the chain's signed head is not valid JSON")
        return
    key = keys.get(str(fields.get("key_id")))
    if key is None or not key.verify(signature, head):
        verdict.fail(None, None, "the chain's head signature does not verify")
        return
    seq, head_hash = fields.get("seq"), fields.get("hash")
    if seq != verdict.head_seq or head_hash != verdict.head_hash:
        if isinstance(seq, int) and seq > verdict.head_seq:
            verdict.fail(
                None,
                None,
                f"the chain ends at seq {verdict.head_seq} but its signed head says seq {seq}: "
                f"the last {seq - verdict.head_seq} record(s) were deleted",
            )
        else:
            verdict.fail(
                None,
                None,
                f"the signed head (seq {seq}, {str(head_hash)[:12]}…) does not match the chain's "
                f"last record (seq {verdict.head_seq}, {verdict.head_hash[:12]}…)",
            )
