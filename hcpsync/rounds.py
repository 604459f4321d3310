"""The pool rounds of one pull: objects that changed on the server mid-pull, or failed their
checksum, are fetched again in more rounds (a few), then reported failed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import TransferConfig
from .engine.events import Listener
from .engine.pool import PoolResult, TransferPool
from .engine.procs import WorkerSet
from .engine.progress import Progress
from .errors import EtagMismatchError, HcpsyncError, ObjectChangedError, VerificationError
from .journal.resume import JournalGate
from .models import PlannedObject
from .store import ObjectStore
from .verify.checker import PullVerifier

#: extra rounds for objects that changed on the server mid-pull or failed verification
REFETCH_ROUNDS = 2
#: ... and for a mismatch with an S3 ETag: a weak signal (SSE-KMS/SSE-C ETags are no MD5s)
ETAG_REFETCH_ROUNDS = 1


@dataclass
class Rounds:
    """What the pool rounds of one pull add up to."""

    result: PoolResult = field(default_factory=PoolResult)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PoolFactory:
    """Makes the pool of each round (the same collaborators every time)."""

    s3: ObjectStore
    bucket: str
    root: Path
    config: TransferConfig
    progress: Progress
    gate: JournalGate | None
    verifier: PullVerifier | None
    listeners: Sequence[Listener]
    remote: WorkerSet | None

    def __call__(self) -> TransferPool:
        return TransferPool(self.s3, self.bucket, self.root, self.config, self.progress,
                            gate=self.gate, checker=self.verifier, listeners=self.listeners, remote=self.remote)


async def run_rounds(make_pool: PoolFactory, objects: Sequence[PlannedObject] | AsyncIterator[Sequence[PlannedObject]],
                     retries: int) -> Rounds:
    """Run the pool; objects that changed mid-pull or failed their checksum get more rounds."""
    out = Rounds()
    rounds = min(retries, REFETCH_ROUNDS)  # --retries 0: no second round either
    for round_no in range(rounds + 1):
        res = await make_pool().run(objects)
        _add(out.result, res)
        again: list[PlannedObject] = []
        for obj, err in res.failures:
            retry = None
            if res.fatal is None:
                retry = await _again(make_pool, obj, err, round_no, rounds, out)
            else:
                out.result.failures.append((obj, err))
            if retry is not None:
                again.append(retry)
        if not again or res.fatal is not None:
            break
        objects = again
    return out


async def _again(make_pool: PoolFactory, obj: PlannedObject, err: HcpsyncError, round_no: int, rounds: int,
                 out: Rounds) -> PlannedObject | None:
    """The object to fetch again in the next round after ``err``, or None (then it failed)."""
    prog = make_pool.progress
    if round_no < rounds and isinstance(err, ObjectChangedError):
        try:
            info = await make_pool.s3.head(make_pool.bucket, obj.key)
        except HcpsyncError as head_err:
            out.result.failures.append((obj, head_err))
            return None
        out.notes.append(f"{obj.key} changed on the server during the pull; fetched again")
        prog.again(0)
        return PlannedObject(obj.key, info.size, info.etag, obj.relpath)
    extra = min(rounds, ETAG_REFETCH_ROUNDS) if isinstance(err, EtagMismatchError) else rounds
    if round_no < extra and isinstance(err, VerificationError):
        out.notes.append(f"{obj.key} failed verification ({err}); fetched again")
        prog.again(obj.size)  # its bytes were counted; they come again
        return obj
    out.result.failures.append((obj, err))
    return None


def _add(total: PoolResult, res: PoolResult) -> None:
    total.transferred_files += res.transferred_files
    total.transferred_bytes += res.transferred_bytes
    total.skipped_files += res.skipped_files
    total.skipped_bytes += res.skipped_bytes
    total.retries += res.retries
    total.fatal = res.fatal
