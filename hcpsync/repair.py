"""``hcpsync verify --repair``: fetch what verification found mismatched or missing, through the
pull's engine and journal, then check again.

    verify (the report *before*)  ->  HEAD each file to repair  ->  a plan of them, pulled with
    ``checksum=True`` (a same-size bad file is replaced)  ->  verify again (the report *after*)

A file S3 no longer holds cannot be repaired; it is listed as such.  The second check reuses the
checksums the first one and the pull recorded, so only what changed is hashed again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from .config import TransferConfig
from .errors import HcpsyncError, NoSuchKeyError
from .models import PlannedObject, PullReport, Selection
from .store import ObjectStore
from .verify.tree import FileCheck, VerifyReport

#: what ``--repair`` fetches again
REPAIRABLE = ("mismatched", "missing")


@dataclass(frozen=True)
class RepairItem:
    """One file ``verify`` found wrong, and what became of it."""

    path: str
    was: str
    now: str
    reason: str = ""

    def to_json(self) -> dict[str, str]:
        doc = {"path": self.path, "was": self.was, "now": self.now}
        if self.reason:
            doc["reason"] = self.reason
        return doc


@dataclass(frozen=True)
class RepairReport:
    """The check before, the pull of what it found wrong, the check after."""

    before: VerifyReport
    after: VerifyReport | None = None  # None: nothing to repair
    pull: PullReport | None = None
    items: tuple[RepairItem, ...] = field(default_factory=tuple)

    @property
    def report(self) -> VerifyReport:
        """The last check: what the tree is now."""
        return self.after if self.after is not None else self.before

    @property
    def ok(self) -> bool:
        return self.report.ok

    @property
    def repaired(self) -> list[RepairItem]:
        return [i for i in self.items if i.now == "ok"]

    @property
    def unrepaired(self) -> list[RepairItem]:
        return [i for i in self.items if i.now != "ok"]

    def to_json(self) -> dict[str, object]:
        doc = self.report.to_json()
        doc["repair"] = {
            "repaired": [i.to_json() for i in self.repaired],
            "unrepaired": [i.to_json() for i in self.unrepaired],
            "before": self.before.counts,
            "pull": None if self.pull is None else {
                "transferred": {"files": self.pull.transferred_files, "bytes": self.pull.transferred_bytes},
                "requests": self.pull.requests,
            },
        }
        return doc


Check = Callable[[], Awaitable[VerifyReport]]
Pull = Callable[[Sequence[PlannedObject]], Awaitable[PullReport]]


async def repair(check: Check, store: ObjectStore, selection: Selection, pull: Pull,
                 config: TransferConfig | None = None) -> RepairReport:
    """Check, fetch again what is wrong (``pull`` of the objects, which HEADs in ``store`` give),
    and check again."""
    before = await check()
    bad = [c for c in before.checks if c.status in REPAIRABLE]
    if not bad:
        return RepairReport(before)
    found, gone = await _head_all(store, selection, bad, (config or TransferConfig()).list_concurrency)
    pulled = await pull(found) if found else None
    after = await check()
    return RepairReport(before, after, pulled, tuple(_outcomes(bad, after, gone, pulled, selection.release_prefix)))


async def _head_all(store: ObjectStore, selection: Selection, bad: list[FileCheck],
                    concurrency: int) -> tuple[list[PlannedObject], dict[str, str]]:
    """The objects of ``bad`` as S3 has them now; and path -> why not, for those it cannot give."""
    gate = asyncio.Semaphore(max(1, concurrency))
    found: list[PlannedObject] = []
    gone: dict[str, str] = {}

    async def one(check: FileCheck) -> None:
        key = selection.release_prefix + check.relpath
        async with gate:
            try:
                info = await store.head(selection.bucket, key)
            except NoSuchKeyError:
                gone[check.relpath] = "not on S3: cannot be fetched"
                return
            except HcpsyncError as err:
                gone[check.relpath] = str(err)
                return
        found.append(PlannedObject(key, info.size, info.etag, check.relpath))

    await asyncio.gather(*(one(c) for c in bad))
    found.sort(key=lambda o: o.key)
    return found, gone


def _outcomes(bad: list[FileCheck], after: VerifyReport, gone: dict[str, str], pulled: PullReport | None,
              prefix: str) -> list[RepairItem]:
    """Each bad file's status before and after, and why it is still not ok."""
    now = {c.relpath: c for c in after.checks}
    failed = {f.key: f.reason for f in pulled.failed} if pulled is not None else {}
    out = []
    for c in bad:
        later = now.get(c.relpath)
        status = later.status if later is not None else "missing"
        why = "" if status == "ok" else (gone.get(c.relpath) or failed.get(prefix + c.relpath)
                                         or (later.detail if later is not None else ""))
        out.append(RepairItem(c.relpath, c.status, status, why))
    return out
