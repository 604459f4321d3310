"""Safe terminal text: S3 keys, paths and messages may hold bytes a terminal obeys.

A key such as ``"a\\r\\x1b[2Kdone\\n"`` printed raw moves the cursor, erases the line and
writes a fake one.  :func:`escape` is applied where human-readable text leaves hcpsync
(reports, status, error messages, the progress bar); JSON output escapes on its own.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

#: C0 controls, DEL, C1 controls, and the Unicode bidi controls that reorder a line on screen
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in _SHORT:
        return _SHORT[ch]
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def escape(text: str) -> str:
    """``text`` with every control and bidi character shown as a visible escape (``\\r``, ``\\x9b``, ``\\u202e``)."""
    return _UNSAFE.sub(_escape_char, text)


def say(line: str, out: TextIO | None = None) -> None:
    """Print one line of human-readable output (stdout by default), escaped."""
    print(escape(line), file=out or sys.stdout)


def human(n: float) -> str:
    """A byte count in binary units: ``512 B``, ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
