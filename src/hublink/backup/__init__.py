"""Backups of the Hub's database and restoring them (contract section 7).

snapshot  a consistent copy in one read transaction while the Hub writes
keys      the hub's age identity and the owner's recipients
pipeline  snapshot → zstd → age, streamed, one backup at a time
service   a backup asked for by the Cloud or the CLI: run, upload, answer
restore   decrypt, decompress, integrity_check; never a partial file
schedule  a backup every day at backup.schedule, through DST and clock jumps (section 11)

The names below load their module when first used (:mod:`hublink._lazy`): the
age and zstd libraries stay out of a daemon that has not backed up yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hublink._lazy import lazy_exports

if TYPE_CHECKING:
    from hublink.backup.restore import restore_backup as restore_backup
    from hublink.backup.schedule import BackupScheduler as BackupScheduler
    from hublink.backup.service import BackupService as BackupService
    from hublink.backup.service import back_up_now as back_up_now

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "restore": ["restore_backup"],
        "service": ["BackupService", "back_up_now"],
        "schedule": ["BackupScheduler"],
    },
)
