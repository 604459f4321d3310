"""The coordinator-worker wire: typed messages framed over a stream, the end of the stream
(the other side closed or died) seen as None, an oversized frame refused."""

from __future__ import annotations

import asyncio
import struct

import pytest

from hcpsync.config import TransferConfig
from hcpsync.engine.fetch import PartSpec
from hcpsync.engine.procs.wire import MAX_MESSAGE, Fetch, Hello, Result, frame, receive
from hcpsync.engine.procs.workerset import worker_config
from hcpsync.errors import ObjectChangedError
from hcpsync.store.gets import Endpoint, Keys


def stream_of(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_messages_round_trip_in_order_and_the_end_of_stream_is_none() -> None:
    spec = PartSpec("HCP_1200/100307/T1w/a.nii.gz", "abc-2", 10 << 20, 8 << 20, 10 << 20, True)
    hello = Hello(Endpoint("http://127.0.0.1:9", "us-east-1", False, None, True, False), Keys("AK", "SK", None),
                  TransferConfig(concurrency=8), "hcp-openaccess")
    sent = [hello, Fetch(1, spec, "/d/a.nii.gz.hcpsync-part", (3, 4), False),
            Result(1, 100, 7, None, True, 0, 1, ObjectChangedError("s3://b/k changed"), None)]
    reader = stream_of(b"".join(frame(m) for m in sent))
    got = [await receive(reader) for _ in sent]
    assert got[:2] == sent[:2]
    res = got[2]
    assert isinstance(res, Result) and isinstance(res.error, ObjectChangedError)
    assert str(res.error) == "s3://b/k changed" and res.written == 100 and res.crc == 7
    assert await receive(reader) is None  # the coordinator (or the worker) is gone


async def test_a_frame_cut_short_is_the_end_and_an_oversized_one_is_refused() -> None:
    whole = frame(Result(2, 0, 0, None, True, 0, 0, None))
    assert await receive(stream_of(whole[:-3])) is None  # died mid-message
    with pytest.raises(ValueError, match="message of"):
        await receive(stream_of(struct.pack("!I", MAX_MESSAGE + 1) + b"x" * 16))


def test_a_workers_share_of_the_concurrency_and_the_bandwidth_cap() -> None:
    cfg = TransferConfig(concurrency=64, max_bandwidth=100 << 20)
    share = worker_config(cfg, 3)
    assert (share.concurrency, share.max_bandwidth, share.workers) == (22, (100 << 20) // 3, 1)
    assert worker_config(TransferConfig(concurrency=1), 4).concurrency == 1
    assert worker_config(TransferConfig(), 2).max_bandwidth is None


def test_workers_start_only_once_a_whole_window_was_cpu_bound_with_a_core_to_spare() -> None:
    from hcpsync.engine.procs.workerset import BusyMeter

    clock = {"wall": 100.0, "cpu": 5.0, "idle": 1000.0}
    meter = BusyMeter(window=0.5, busy=0.75, spare=0.5,
                      clocks=(lambda: clock["wall"], lambda: clock["cpu"], lambda: clock["idle"]))

    def tick(wall: float, cpu: float, idle: float) -> bool:
        clock["wall"] += wall
        clock["cpu"] += cpu
        clock["idle"] += idle
        return meter.saturated()

    assert not tick(0, 0, 0)  # the first part opens a window
    assert not tick(0.3, 0.3, 0.3)  # not a whole window yet
    assert not tick(0.3, 0.05, 1.0)  # 0.35 CPU-s in 0.6 s: waiting on the network, not on a core
    assert not tick(0.6, 0.55, 0.1)  # one core full, but the machine has none idle (an origin, the hashing)
    assert tick(0.6, 0.55, 0.5)  # one core full, most of another idle: start the workers
