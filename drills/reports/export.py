"""Bundles for auditors: sealed records, their evidence and the public key, verifiable offline.

A bundle is a directory::

    README.md                how to verify it (Chinese and English)
    manifest.json            what is in it: the records, the chain head, the SHA-256 of every file
    manifest.sig             Ed25519 signature of manifest.json (base64), by the site's key
    chain.jsonl              the store's whole chain of headers, seq 1 to the head, one per line:
                             {"hash", "header", "signature"} — it proves where each exported
                             record sits in the chain without disclosing the others' content
    head.json, head.sig      the store's signed head when the bundle was made
    records/SEQ-ID.json      each exported record: the exact canonical bytes that were sealed
    evidence/SEQ-ID/NAME     each record's evidence (the run's journal, attachments)
    keys/KEYID.pub           the public key(s) that signed them
    reports/ID.zh.html       the drill reports, for reading (not part of the proof)

``verify_bundle`` checks all of it with nothing but the bundle and a public key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import drills
from drills.model.errors import InputError
from drills.records.chain import Entry, Verdict, canonical, sha256, verify_chain, verify_head
from drills.records.signing import PublicKey, read_public_keys
from drills.records.store import RecordStore

MANIFEST_SCHEMA = "drctl.bundle/1"


@dataclass
class ExportResult:
    directory: Path
    drills: list[str]
    annotations: list[str]
    files: int
    warnings: list[str] = field(default_factory=list)


def _record_file(entry: Entry) -> str:
    return f"records/{entry.seq:06d}-{entry.id}.json"


def _evidence_file(entry: Entry, name: str) -> str:
    return f"evidence/{entry.seq:06d}-{entry.id}/{name}"


def select(store: RecordStore, record_id: str | None, since: date | None) -> list[Entry]:
    """The drill entries to export: one (by id or unique prefix) or all started on or after a
    date (UTC)."""
    if (record_id is None) == (since is None):
        raise InputError("export needs a record ID or --since DATE (one of them)")
    if record_id is not None:
        full = store.resolve(record_id)
        store.sealed(full)  # checks it; an unsealed run is refused with the command to seal it
        return [e for e in store.entries() if e.id == full]
    assert since is not None
    start = since.isoformat()
    return [
        e
        for e in store.entries()
        if e.kind == "drill" and str(e.summary.get("started_at", ""))[:10] >= start
    ]


def export_bundle(
    store: RecordStore,
    out: Path,
    *,
    record_id: str | None = None,
    since: date | None = None,
    reports: bool = True,
) -> ExportResult:
    chosen = select(store, record_id, since)
    if not chosen:
        raise InputError(f"no sealed drill records started on or after {since}")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty: export into a new directory")
    wanted = {e.id for e in chosen}
    chain = list(store.entries(with_body=True))
    exported = [
        e for e in chain if e.id in wanted or (e.kind == "annotation" and set(e.refs) & wanted)
    ]
    head = store.backend.head()
    if head is None:
        raise InputError(f"the record store {store.location} has no signed head")
    key = store.signing_key()
    keys = store.public_keys()
    result = ExportResult(out, sorted(wanted), [e.id for e in exported if e.kind != "drill"], 0)

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    def put(rel: str, data: bytes) -> None:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[rel] = sha256(data)

    put("chain.jsonl", b"".join(e.chain_line() + b"\n" for e in chain))
    put("head.json", head[0])
    put("head.sig", head[1].encode("ascii") + b"\n")
    for entry in exported:
        assert entry.body is not None
        put(_record_file(entry), entry.body)
        for item in entry.evidence:
            data = store.evidence(entry, item.name)
            if data is None:
                result.warnings.append(f"{entry.id}: evidence {item.name} is missing in the store")
                continue
            put(_evidence_file(entry, item.name), data)
    used = {str(e.fields.get("key_id")) for e in chain}
    for key_id in sorted(used):
        if key_id in keys:
            put(f"keys/{key_id}.pub", keys[key_id].pem)
        else:
            result.warnings.append(f"public key {key_id} is not in this site's keys directory")
    if reports:
        from drills.reports import render_report

        for drill_id in sorted(wanted):
            sealed = store.sealed(drill_id)
            put(f"reports/{drill_id}.zh.html", render_report(sealed, fmt="html", lang="zh"))
    head_fields = json.loads(head[0])
    readme = README.format(
        head_seq=head_fields.get("seq"),
        head_hash=head_fields.get("hash"),
        key_ids=", ".join(sorted(used)),
        count=len(wanted),
    )
    put("README.md", readme.encode("utf-8"))
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "drctl": drills.__version__,
        "store": store.location,
        "head": {"seq": head_fields.get("seq"), "hash": head_fields.get("hash")},
        "records": [
            {"seq": e.seq, "id": e.id, "kind": e.kind, "file": _record_file(e)} for e in exported
        ],
        "files": files,
        "key_id": key.key_id,
    }
    data = canonical(manifest)
    (out / "manifest.json").write_bytes(data)
    (out / "manifest.sig").write_text(key.sign(data) + "\n", encoding="ascii")
    result.files = len(files) + 2
    return result


def _bundle_keys(directory: Path) -> dict[str, PublicKey]:
    return read_public_keys(sorted((directory / "keys").glob("*.pub")))


def _chain_lines(path: Path, verdict: Verdict) -> Iterator[Entry]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield Entry.from_chain_line(line)
            except (ValueError, KeyError, TypeError):
                verdict.fail(None, None, f"chain.jsonl line {number} is not a chain entry")


def verify_bundle(directory: Path, keys: dict[str, PublicKey] | None = None) -> Verdict:
    """Check a bundle offline: the manifest's signature and every file it lists, the whole chain
    of headers with their signatures, the signed head, and each record and piece of evidence
    against the header that sealed it."""
    if not (directory / "manifest.json").is_file():
        raise InputError(f"{directory} is not a drctl bundle (no manifest.json)")
    verdict = Verdict()
    if keys is None:
        keys = _bundle_keys(directory)
        verdict.warnings.append(
            "signatures were checked with the public key(s) shipped in the bundle; pass "
            "--public-key with a copy you obtained from the site to trust them"
        )
    if not keys:
        verdict.fail(None, None, "no public key to check signatures with (--public-key FILE)")
    manifest_bytes = (directory / "manifest.json").read_bytes()
    try:
        signature = (directory / "manifest.sig").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        signature = ""
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError:
        verdict.fail(None, None, "manifest.json is not valid JSON")
        return verdict
    key = keys.get(str(manifest.get("key_id")))
    if key is None or not key.verify(signature, manifest_bytes):
        verdict.fail(None, None, "manifest.json's signature does not verify: the bundle changed")
    listed: dict[str, str] = dict(manifest.get("files") or {})
    for rel, digest in listed.items():
        path = directory / rel
        if not path.is_file():
            verdict.fail(None, None, f"{rel} is listed in the manifest but missing")
        elif sha256(path.read_bytes()) != digest:
            verdict.fail(None, None, f"{rel} changed after the bundle was made")
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel not in listed and rel not in ("manifest.json", "manifest.sig"):
            verdict.warnings.append(f"{rel} is not part of the bundle (added later?)")

    records = {int(r["seq"]): r for r in manifest.get("records") or []}

    def body_of(entry: Entry) -> bytes | None:
        path = directory / _record_file(entry)
        return path.read_bytes() if path.is_file() else None

    def evidence_of(entry: Entry, name: str) -> bytes | None:
        path = directory / _evidence_file(entry, name)
        return path.read_bytes() if path.is_file() else None

    chain_path = directory / "chain.jsonl"
    if not chain_path.is_file():
        verdict.fail(None, None, "chain.jsonl is missing")
        return verdict
    seen: set[int] = set()

    def wanted(entry: Entry) -> bool:
        if entry.seq in records:
            seen.add(entry.seq)
            if records[entry.seq].get("id") != entry.id:
                verdict.fail(
                    entry.seq, entry.id, f"the manifest names {records[entry.seq].get('id')} here"
                )
            return True
        return False

    verify_chain(
        _chain_lines(chain_path, verdict),
        keys,
        want_body=wanted,
        body_of=body_of,
        evidence_of=evidence_of,
        verdict=verdict,
    )
    for seq in sorted(set(records) - seen):
        verdict.fail(seq, str(records[seq].get("id")), "exported, but not in the chain")
    head: bytes | None = None
    head_sig: str | None = None
    try:
        head = (directory / "head.json").read_bytes()
        head_sig = (directory / "head.sig").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        pass
    verify_head(verdict, head, head_sig, keys)
    return verdict


README = """\
# drctl 演练记录包 / drill record bundle

本目录是 drctl 导出的应急演练记录包：{count} 份演练记录、其证据（运行日志 journal、附件）、
签名公钥，以及本说明。记录在封存时写入哈希链并由现场的 Ed25519 密钥签名；任何一个字节的修改、
删除或调换都会被发现。

This directory is a drill record bundle exported by drctl: {count} drill record(s), their evidence
(the run journals, attachments), the public key that signed them, and this README. Each record was
sealed into a hash chain and signed with the site's Ed25519 key when it was written: a change of
one byte, a deleted record or a reordered pair is detected.

## 如何核验 / How to verify

1. 从现场（信息科）以独立渠道取得公钥文件，核对密钥编号（key id）：{key_ids}。
   Obtain the site's public key through a channel you trust (not from this bundle) and check its
   key id: {key_ids}.
2. 安装 drctl（从其源码 `pip install .`；无需连接现场），然后运行：
   Install drctl (no connection to the site is needed) and run:

       drctl records verify --bundle . --public-key /path/to/records-ed25519.pub

   全部通过时退出码为 0；否则指出第一个有问题的记录并以非零退出。
   It exits 0 when everything verifies; otherwise it names the first bad record and exits
   non-zero.
3. 记下链头，下次审计时对比（可发现末尾记录被删除）：
   Note the chain head and compare it at the next audit (this catches deleted newest records):
   seq {head_seq}, sha256 {head_hash}

## 不用 drctl 核验 / Verifying without drctl

- `records/SEQ-ID.json` 是封存时的原始字节（规范化 JSON）；其 `sha256sum` 必须等于
  `chain.jsonl` 中同一 seq 的 `header.record_hash`。
  `records/SEQ-ID.json` holds the exact bytes that were sealed (canonical JSON); its `sha256sum`
  must equal `header.record_hash` of the same seq in `chain.jsonl`.
- `chain.jsonl` 每行的 `header` 按键排序、无空白、UTF-8 序列化后：其 SHA-256 等于该行 `hash`，
  等于下一行的 `header.prev_hash`（第 1 条为 64 个 0）；`signature` 是对这些字节的 Ed25519 签名
  （base64）。
  Serialise each line's `header` with sorted keys, no whitespace, UTF-8: its SHA-256 is the line's
  `hash` and the next line's `header.prev_hash` (64 zeros for seq 1); `signature` is the Ed25519
  signature (base64) of those bytes.
- `manifest.json` 列出每个文件的 SHA-256，`manifest.sig` 是对 manifest.json 的签名。
  `manifest.json` lists the SHA-256 of every file; `manifest.sig` signs manifest.json.
- `reports/` 中的报告仅供阅读，由记录渲染而来。The reports in `reports/` are for reading; they
  are rendered from the records.
"""
