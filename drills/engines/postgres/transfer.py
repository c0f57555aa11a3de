"""Moving a file from one node's host to another's, through their host executors.

A migration's dump is made on the source's host and restored on the target's. drctl may run on a
third host and the two nodes need not reach each other, so the file goes through drctl: read from
the source host in chunks of ``CHUNK_BYTES`` (``dd | base64``, one command each, which keeps every
answer under the executors' output limit), appended on the target host (``base64 -d >>``) to a
``.part`` file that is renamed when complete, then checked there against the sha256 the dump step
recorded. Each chunk is one round trip to each host (some 60 ms over SSH), so this is meant for
dumps of up to a few GiB; ``max_mib`` caps it, and a bigger dump fails with that reason before
anything is copied (the rollback then releases the source).

A copy between two nodes on the same host as the same OS user is not needed: the file is used
where it is.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from drills.executors.host import HostExecutor
from drills.model.errors import CommandFailed

CHUNK_BYTES = 512 * 1024
DEFAULT_MAX_MIB = 2048
_READ = 'dd if="$1" bs="$2" skip="$3" count=1 iflag=fullblock 2>/dev/null | base64 -w 0'
_START = 'umask 077; : > "$1"'
_APPEND = 'base64 -d >> "$1"'


@dataclass(frozen=True)
class Copied:
    """What a copy did: for the step's data."""

    source_path: str
    target_path: str
    bytes: int
    chunks: int
    seconds: float
    sha256: str

    def as_data(self) -> dict[str, object]:
        return {
            "source_path": self.source_path,
            "target_path": self.target_path,
            "bytes": self.bytes,
            "chunks": self.chunks,
            "seconds": self.seconds,
            "sha256": self.sha256,
        }


def same_place(
    source: HostExecutor, source_user: str | None, target: HostExecutor, target_user: str | None
) -> bool:
    """Whether a file of the source's OS user on its host can be used as it is on the target's:
    the same host (same address) and the same OS user."""
    return source.address == target.address and source_user == target_user


def encoded_length(size: int) -> int:
    return 4 * math.ceil(size / 3)


def copy_file(
    source: HostExecutor,
    source_path: str,
    source_user: str | None,
    target: HostExecutor,
    target_path: str,
    target_user: str | None,
    *,
    size: int,
    expected_sha256: str,
    deadline: float,
    chunk_bytes: int = CHUNK_BYTES,
) -> Copied:
    """Copy ``size`` bytes of ``source_path`` to ``target_path``, chunk by chunk through the two
    executors, and check the copy's sha256 on the target. The partial file is removed on any
    failure; the complete one is the caller's to remove."""
    started = time.monotonic()
    part = f"{target_path}.part"
    chunks = math.ceil(size / chunk_bytes)
    target.run(["sh", "-c", _START, "sh", part], user=target_user, timeout=30)
    try:
        for index in range(chunks):
            want = encoded_length(min(chunk_bytes, size - index * chunk_bytes))
            left = max(5.0, deadline - time.monotonic())
            text = source.run(
                ["sh", "-c", _READ, "sh", source_path, str(chunk_bytes), str(index)],
                user=source_user,
                timeout=min(120.0, left),
            ).stdout.strip()
            if len(text) != want:
                raise CommandFailed(
                    f"reading {source_path} on {source.host} for the copy to {target.host}: "
                    f"chunk {index + 1} of {chunks} came back with {len(text)} characters, not "
                    f"{want} (the file changed or could not be read)",
                    returncode=1,
                    host=source.host,
                )
            target.run(
                ["sh", "-c", _APPEND, "sh", part],
                user=target_user,
                timeout=min(120.0, left),
                input=text,
            )
        digest = target.run(["sha256sum", "--", part], user=target_user, timeout=600).stdout
        actual = digest.split()[0] if digest.split() else ""
        if actual != expected_sha256:
            raise CommandFailed(
                f"the copy of {source_path} ({source.host}) at {target_path} on {target.host} "
                f"does not match its sha256 (expected {expected_sha256[:16]}…, got "
                f"{actual[:16]}…)",
                returncode=1,
                host=target.host,
            )
        target.run(["mv", "-f", "--", part, target_path], user=target_user, timeout=30)
    except BaseException:
        target.run(["rm", "-f", "--", part], user=target_user, timeout=30, check=False)
        raise
    return Copied(
        source_path,
        target_path,
        size,
        chunks,
        round(time.monotonic() - started, 3),
        actual,
    )
