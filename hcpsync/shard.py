"""Shards: the K-th of N deterministic, disjoint parts of a selection, pulled by one machine (or
one task of a SLURM array, or one Dask task) into a destination the others share.

By subject (the default) a shard holds whole subjects, the selection's sorted subjects dealt
round-robin, so it can verify them against their own manifests and lists only them.  By key
(``--shard-by key``), every key goes to the shard ``crc32(key) mod N``: one huge subject over many
machines (each lists the whole selection).  Each shard keeps its journal and lock under
``DEST/.hcpsync/shards/<K>-of-<N>[-by-key]/``, so shards never contend, and any one can be killed
and re-run alone.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import UsageError

#: ``--shard-by`` values
SHARD_BY = ("subject", "key")
#: the folder (under ``DEST/.hcpsync/``) holding one folder per shard
SHARDS_DIR = "shards"

_SPEC = re.compile(r"^\s*(\d+|auto)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` (``0 <= index < count``), by ``"subject"`` or by ``"key"``."""

    index: int
    count: int
    by: str = "subject"

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError(f"--shard {self.index}/{self.count}: the number of shards must be at least 1")
        if not 0 <= self.index < self.count:
            raise UsageError(f"--shard {self.index}/{self.count}: K must be between 0 and {self.count - 1} (K/N counts from 0)")
        if self.by not in SHARD_BY:
            raise UsageError(f"--shard-by {self.by!r}: expected one of {', '.join(SHARD_BY)}")

    @classmethod
    def parse(cls, text: str, by: str = "subject", env: Mapping[str, str] = os.environ) -> Shard:
        """``K/N``, or ``auto/N`` (K from ``SLURM_ARRAY_TASK_ID``, less ``SLURM_ARRAY_TASK_MIN``)."""
        m = _SPEC.match(text)
        if m is None:
            raise UsageError(f"--shard {text!r}: expected K/N (e.g. 0/16) or auto/N")
        count = int(m.group(2))
        if m.group(1) != "auto":
            return cls(int(m.group(1)), count, by)
        task = env.get("SLURM_ARRAY_TASK_ID")
        if task is None or not task.strip().isdigit():
            raise UsageError(f"--shard auto/{count}: SLURM_ARRAY_TASK_ID is not set (or not a number); "
                             f"run inside a SLURM array (sbatch --array=0-{max(count - 1, 0)}) or give K/N")
        low = env.get("SLURM_ARRAY_TASK_MIN", "0").strip()
        return cls(int(task) - (int(low) if low.isdigit() else 0), count, by)

    @property
    def name(self) -> str:
        """The shard's folder name: ``3-of-16``, ``3-of-16-by-key``."""
        return f"{self.index}-of-{self.count}" + ("-by-key" if self.by == "key" else "")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}" + (" by key" if self.by == "key" else "")

    def subjects(self, subjects: Sequence[str]) -> list[str]:
        """The subjects this shard lists: all of them by key; its round-robin share by subject."""
        if self.by == "key":
            return list(subjects)
        mine = set(sorted(set(subjects))[self.index :: self.count])
        return [s for s in subjects if s in mine]

    def has_key(self, key: str) -> bool:
        """Whether this shard fetches ``key`` (always, by subject: its subjects were chosen)."""
        return self.by != "key" or zlib.crc32(key.encode()) % self.count == self.index
