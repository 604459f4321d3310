"""Progress: the callback's throttling and the tqdm bar's content."""

from __future__ import annotations

import io

from hcpsync.engine.progress import Progress, ProgressEvent, TqdmBar, want_bar


def test_progress_throttles_byte_events_but_reports_every_file() -> None:
    events: list[ProgressEvent] = []
    p = Progress(events.append, interval=3600)
    p.start(2, 300)
    for _ in range(100):
        p.add_bytes(1)  # throttled: no event
    p.file_done("a")
    p.add_bytes(200)
    p.file_done("b", ok=False)
    p.finish()
    assert [(e.files_done, e.files_failed, e.bytes_done) for e in events] == [(0, 0, 0), (1, 0, 100), (1, 1, 300), (1, 1, 300)]
    assert events[1].last_key == "a" and events[-1].bytes_total == 300


def test_tqdm_bar_shows_bytes_and_files() -> None:
    out = io.StringIO()
    bar = TqdmBar(file=out, desc="pull")
    bar(ProgressEvent(0, 2, 0, 2048, 0, 0.0))
    bar(ProgressEvent(1, 2, 1024, 2048, 0, 1.0))
    bar(ProgressEvent(2, 2, 2048, 2048, 1, 2.0))
    bar.close()
    text = out.getvalue()
    assert "files 2/2, 1 failed" in text and "2.0 KiB/2.0 KiB, 1.0 KiB/s" in text


def test_no_bar_when_not_a_tty() -> None:
    assert not want_bar(False, io.StringIO())
    assert not want_bar(True, io.StringIO())
