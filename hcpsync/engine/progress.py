"""Progress reporting: a callback API and a tqdm bar built on it."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..text import escape


@dataclass(frozen=True)
class ProgressEvent:
    """A snapshot of a pull's progress, passed to progress callbacks."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    files_failed: int
    elapsed: float
    last_key: str | None = None

    @property
    def rate(self) -> float:
        return self.bytes_done / self.elapsed if self.elapsed > 0 else 0.0


ProgressCallback = Callable[[ProgressEvent], None]


class Progress:
    """Counts bytes and files, and calls ``callback`` at most every ``interval`` seconds
    (and always when a file finishes and at the end)."""

    def __init__(self, callback: ProgressCallback | None = None, interval: float = 0.1) -> None:
        self.callback = callback
        self.interval = interval
        self.files_total = 0
        self.bytes_total = 0
        self.files_done = 0
        self.files_failed = 0
        self.bytes_done = 0
        self._t0 = time.monotonic()
        self._last = 0.0

    def start(self, files_total: int, bytes_total: int) -> None:
        self.files_total, self.bytes_total = files_total, bytes_total
        self._t0 = self._last = time.monotonic()
        self._emit(None)

    def grow(self, files_total: int, bytes_total: int) -> None:
        """The plan grew (its listing goes on while files are fetched): the new totals."""
        self.files_total, self.bytes_total = files_total, bytes_total

    def add_bytes(self, n: int) -> None:
        self.bytes_done += n
        if self.callback is not None:
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._emit(None)

    def again(self, discarded_bytes: int) -> None:
        """A file counted as failed goes into another round; its ``discarded_bytes`` come again."""
        self.files_failed -= 1
        self.bytes_done -= discarded_bytes

    def file_done(self, key: str, ok: bool = True) -> None:
        if ok:
            self.files_done += 1
        else:
            self.files_failed += 1
        self._emit(key)

    def finish(self) -> None:
        self._emit(None)

    def snapshot(self, key: str | None = None) -> ProgressEvent:
        return ProgressEvent(
            self.files_done, self.files_total, self.bytes_done, self.bytes_total,
            self.files_failed, time.monotonic() - self._t0, key,
        )

    def _emit(self, key: str | None) -> None:
        if self.callback is not None:
            self.callback(self.snapshot(key))


def iec(n: float) -> str:
    """Bytes in binary units, as the report prints them: 512 B, 1.5 KiB, 3.2 MiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def _columns(stream: Any) -> int:
    """The terminal's width, or -1 when unknown (not a terminal)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return -1


class TqdmBar:
    """A tqdm bar fed by progress events: bytes and rate in binary units (MiB/s), ETA, files done/total.

    A terminal that reports 0 columns (serial consoles, some CI pseudo-terminals) gets 80."""

    def __init__(self, file: Any = None, desc: str = "pull") -> None:
        from tqdm import tqdm

        stream = file or sys.stderr
        zero = _columns(stream) == 0
        self._bar = tqdm(
            total=0, desc=escape(desc), file=stream, dynamic_ncols=not zero, ncols=80 if zero else None,
            mininterval=0.2, smoothing=0.1, bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
        )
        self._seen = 0

    def __call__(self, ev: ProgressEvent) -> None:
        bar = self._bar
        if bar.total != ev.bytes_total:
            bar.total = ev.bytes_total
        delta = ev.bytes_done - self._seen
        self._seen = ev.bytes_done
        failed = f", {ev.files_failed} failed" if ev.files_failed else ""
        bar.set_postfix_str(escape(f"{iec(ev.bytes_done)}/{iec(ev.bytes_total)}, {iec(ev.rate)}/s, "
                                   f"files {ev.files_done}/{ev.files_total}{failed}"), refresh=False)
        bar.update(delta)

    def close(self) -> None:
        self._bar.close()


def want_bar(no_progress: bool, stream: Any = None) -> bool:
    s = stream or sys.stderr
    return not no_progress and hasattr(s, "isatty") and s.isatty()
