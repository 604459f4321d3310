"""Subjects from a file: one ID a line (``#`` comments), or a CSV such as HCP's behavioural data
(``unrestricted_*.csv``: a header row, a ``Subject`` column, ``Gender``, ``Age``, ``Release``,
``3T_Full_MR_Compl``...) whose rows are filtered by ``--where`` conditions.

A condition is ``COLUMN=VALUE``, ``COLUMN!=VALUE``, ``COLUMN<NUMBER`` or ``COLUMN>NUMBER``; all
must hold for a row to be kept.  ``=``/``!=`` compare the cell's text (surrounding blanks
ignored; ``COLUMN=`` matches an empty cell); ``<``/``>`` compare numbers, and a cell that is no
number (empty, ``22-25``) does not match.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import SelectionError, UsageError

_WHERE = re.compile(r"^\s*([^<>!=]+?)\s*(!=|=|<|>)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Condition:
    """One ``--where``: ``column op value``."""

    column: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Condition:
        m = _WHERE.match(text)
        if m is None:
            raise UsageError(f"--where {text!r}: expected COLUMN=VALUE, COLUMN!=VALUE, COLUMN<NUMBER or COLUMN>NUMBER")
        column, op, value = m.groups()
        if op in "<>" and _number(value) is None:
            raise UsageError(f"--where {text!r}: {op} compares numbers, and {value!r} is none")
        return cls(column, op, value)

    def holds(self, cell: str) -> bool:
        cell = cell.strip()
        if self.op == "=":
            return cell == self.value
        if self.op == "!=":
            return cell != self.value
        have, want = _number(cell), _number(self.value)
        if have is None or want is None:
            return False
        return have < want if self.op == "<" else have > want

    def __str__(self) -> str:
        return f"{self.column}{self.op}{self.value}"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class SubjectsFile:
    """The subjects a file gives, and (for a CSV) how many of its rows the conditions kept."""

    subjects: list[str]
    rows: int = 0
    matched: int = 0
    csv: bool = False

    def summary(self, path: str, where: Sequence[Condition]) -> str:
        """``cohort.csv: 412 of 1206 rows match --where Gender=F`` (for a CSV)."""
        conds = " ".join(f"--where {c}" for c in where)
        return f"{path}: {self.matched} of {self.rows} rows match{' ' + conds if conds else ''}"


def read_subjects(path: str, column: str | None = None, where: Sequence[Condition] = ()) -> SubjectsFile:
    """The subjects of ``path``: a CSV when its first line has a comma (or ``column``/``where``
    are given), else one ID a line."""
    text = _read(path)
    first = next((line for line in text.splitlines() if line.split("#", 1)[0].strip()), "")
    if column is None and not where and "," not in first:
        return SubjectsFile(_plain(path, text))
    return _from_csv(path, text, column or "Subject", where)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read subjects file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"subjects file {path} is not UTF-8 text") from exc


def _plain(path: str, text: str) -> list[str]:
    out = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    out = [s for s in out if s]
    if not out:
        raise SelectionError(f"subjects file {path} lists no subject")
    return out


def _from_csv(path: str, text: str, column: str, where: Sequence[Condition]) -> SubjectsFile:
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise UsageError(f"subjects file {path} is no readable CSV: {exc}") from exc
    columns = [c.strip() for c in (rows[0].keys() if rows else _header(text)) if c is not None]
    unknown = [name for name in (column, *(c.column for c in where)) if name not in columns]
    if unknown:
        shown = ", ".join(columns[:40]) + (" ..." if len(columns) > 40 else "")
        raise UsageError(f"subjects file {path} has no column {unknown[0]!r}; its columns: {shown}")
    kept = [r for r in rows if all(c.holds(_cell(r, c.column)) for c in where)]
    subjects = list(dict.fromkeys(s for s in (_cell(r, column).strip() for r in kept) if s))
    if not subjects:
        conds = " ".join(f"--where {c}" for c in where)
        raise SelectionError(f"no row of {path} ({len(rows)} rows) gives a subject{' with ' + conds if conds else ''}")
    return SubjectsFile(subjects, len(rows), len(kept), csv=True)


def _header(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)), [])


def _cell(row: dict[str, str | None], column: str) -> str:
    value = row.get(column)
    if value is None:  # a header with blanks around a name
        value = next((v for k, v in row.items() if k is not None and k.strip() == column), None)
    return value or ""
