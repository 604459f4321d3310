"""The journal: a SQLite file beside the destination that makes pulls resumable (public API).

``store`` (the :class:`Journal`), ``db`` (schema, connection), ``lock``, ``status``,
``checksums`` (the verifier's cache), ``resume`` (the pool's gate and the check of partial
files), ``session`` (a pull's hold on its destination).
"""

from .checksums import JournalChecksums, open_journal_if_any
from .db import default_journal_path
from .lock import Lock, holder_pid
from .resume import JournalGate, check_partials
from .session import PullSession
from .status import JournalStatus, status_of
from .store import Journal

__all__ = [
    "Journal",
    "JournalChecksums",
    "JournalGate",
    "JournalStatus",
    "Lock",
    "PullSession",
    "check_partials",
    "default_journal_path",
    "holder_pid",
    "open_journal_if_any",
    "status_of",
]
