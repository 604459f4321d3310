"""What the coordinator and its worker processes say to each other, and how it travels.

Each worker has one Unix socket to the coordinator.  Messages are typed records, framed as a
4-byte length and a pickle.  The coordinator says :class:`Hello` once, then :class:`Fetch`,
:class:`Cancel` and :class:`NewKeys`; a worker answers :class:`Ready` (or :class:`Broken`), then one :class:`Result`
per :class:`Fetch`, cancelled or not.  The coordinator closing its end ends the worker: that
is how a worker learns that its coordinator died (no timer, no signal).
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import NamedTuple

from ...config import TransferConfig
from ...errors import HcpsyncError
from ...store.gets import Endpoint, Keys
from ..fetch import PartSpec

_LEN = struct.Struct("!I")
#: the largest message either side accepts (a Fetch is a few hundred bytes)
MAX_MESSAGE = 1 << 20


class Hello(NamedTuple):
    """The worker's whole configuration: where to GET from, the keys to sign with (None:
    anonymous), its share of the transfer."""

    endpoint: Endpoint
    keys: Keys | None
    config: TransferConfig
    bucket: str


class NewKeys(NamedTuple):
    """The coordinator's credentials were refreshed (temporary keys expire): sign with these."""

    keys: Keys


class Ready(NamedTuple):
    pid: int


class Broken(NamedTuple):
    """The worker could not open its store (bad credentials, a CA bundle it cannot read...)."""

    error: HcpsyncError


class Fetch(NamedTuple):
    """GET ``spec`` into the file at ``path``: the inode ``ident`` (device, inode) the coordinator
    created (a range), or, ``ident`` None, a file the worker creates (a small object fetched
    whole; a stale one is replaced); ``md5``: hash the stream."""

    id: int
    spec: PartSpec
    path: str
    ident: tuple[int, int] | None
    md5: bool


class Cancel(NamedTuple):
    id: int


class Result(NamedTuple):
    """How far part ``id`` got: ``written`` bytes from its start, their CRC-32 (ranged parts)
    or the stream's MD5 (whole objects, when asked); ``error`` when it failed, ``requests``
    sent for it; ``created``: the (device, inode) of the file the worker created and wrote
    (None when it failed: then the worker removed it)."""

    id: int
    written: int
    crc: int
    md5: str | None
    etag_is_md5: bool
    retries: int
    requests: int
    error: HcpsyncError | None
    created: tuple[int, int] | None = None


ToWorker = Hello | Fetch | Cancel | NewKeys
FromWorker = Ready | Broken | Result


def frame(message: ToWorker | FromWorker) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


async def receive(reader: asyncio.StreamReader) -> object | None:
    """The next message, or None at the end of the stream (the other side closed or died)."""
    try:
        head = await reader.readexactly(_LEN.size)
        (size,) = _LEN.unpack(head)
        if size > MAX_MESSAGE:
            raise ValueError(f"message of {size} bytes")
        message: object = pickle.loads(await reader.readexactly(size))
        return message
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
