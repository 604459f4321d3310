"""The journal: a SQLite file beside the destination that makes pulls resumable (public API)."""

from .resume import JournalObserver, check_partials
from .store import Journal, JournalStatus, Lock, default_journal_path, holder_pid, open_journal_if_any, status_of

__all__ = [
    "Journal",
    "JournalObserver",
    "JournalStatus",
    "Lock",
    "check_partials",
    "default_journal_path",
    "holder_pid",
    "open_journal_if_any",
    "status_of",
]
