"""Backups that really restore: the catalogue of the backup and restore actions.

Physical (``playbooks/pg-backup-verify.yaml``)::

    pg.basebackup         take a plain-format backup, or find the newest   (basebackup)
    pg.verifybackup       pg_verifybackup against its manifest              (basebackup)
    pg.restore_scratch    into a scratch server, to the backup's end        (restore)
    pg.reconcile_scratch  the scratch server's tables against the source's  (compare)
    pg.drop_scratch       stop and remove the scratch server (the rollback) (restore)

Logical (``playbooks/pg-dump-restore-verify.yaml``): ``pg.dump`` and ``pg.verifydump`` (dump),
``pg.restore_dump_scratch`` (restore), then the same reconcile and drop.

Every step does its work on the host of the node it targets (the shipped playbooks use the
standby), through that node's executor, as its database OS user; its data say which host
(``host``, ``address``). Every step records what it measured (path, label, LSNs, size, age,
seconds, address and port, the comparison per table); a step that finds a fault fails with one
sentence naming the file, table or host, and keeps its measurements.
"""

from __future__ import annotations

from drills.engine.catalogue import ActionSpec, Params
from drills.engines.postgres.backupdir import TakeParams
from drills.engines.postgres.basebackup import (
    basebackup_describe,
    basebackup_run,
    verifybackup_describe,
    verifybackup_run,
)
from drills.engines.postgres.compare import (
    ScratchReconcileParams,
    reconcile_scratch_describe,
    reconcile_scratch_run,
)
from drills.engines.postgres.dump import (
    DumpParams,
    dump_describe,
    dump_run,
    verifydump_describe,
    verifydump_run,
)
from drills.engines.postgres.restore import (
    RestoreParams,
    drop_scratch_describe,
    drop_scratch_run,
    restore_dump_scratch_describe,
    restore_dump_scratch_run,
    restore_scratch_describe,
    restore_scratch_run,
)

ENGINE = "postgres"


def backup_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            "pg.basebackup",
            TakeParams,
            basebackup_run,
            basebackup_describe,
            True,
            "Take a plain-format backup with pg_basebackup on the node's host (or find the "
            "newest one there); fail when it is older than max_backup_age.",
            engine=ENGINE,
        ),
        ActionSpec(
            "pg.verifybackup",
            Params,
            verifybackup_run,
            verifybackup_describe,
            False,
            "Check the backup against its manifest with pg_verifybackup; name a damaged file.",
            engine=ENGINE,
        ),
        ActionSpec(
            "pg.restore_scratch",
            RestoreParams,
            restore_scratch_run,
            restore_scratch_describe,
            True,
            "Restore the backup into a scratch server on a free port of the node's address, "
            "recovered to the backup's end.",
            engine=ENGINE,
        ),
        ActionSpec(
            "pg.reconcile_scratch",
            ScratchReconcileParams,
            reconcile_scratch_run,
            reconcile_scratch_describe,
            False,
            "Compare the scratch server's tables with the source's, row by row.",
            engine=ENGINE,
        ),
        ActionSpec(
            "pg.drop_scratch",
            Params,
            drop_scratch_run,
            drop_scratch_describe,
            True,
            "Stop and remove the scratch server of this run.",
            engine=ENGINE,
        ),
        ActionSpec(
            "pg.dump",
            DumpParams,
            dump_run,
            dump_describe,
            True,
            "Dump a database with pg_dump -Fc and a sha256 file on the node's host (or find the "
            "newest dump there); fail when it is older than max_backup_age.",
            engine=ENGINE,
        ),
        ActionSpec(
            "pg.verifydump",
            Params,
            verifydump_run,
            verifydump_describe,
            False,
            "Check the dump against its sha256 file and read its table of contents.",
            engine=ENGINE,
        ),
        ActionSpec(
            "pg.restore_dump_scratch",
            RestoreParams,
            restore_dump_scratch_run,
            restore_dump_scratch_describe,
            True,
            "initdb a scratch server on a free port of the node's address and pg_restore the "
            "dump into it.",
            engine=ENGINE,
        ),
    ]
