"""Scheduling: the only place that decides whether an object is fetched in ranges, and how.

:func:`is_ranged` is the one predicate; :func:`split_parts` turns an object into the parts the
pool fetches; :func:`schedule` orders a plan's objects for the pool.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config import TransferConfig
from ..models import Part, PlannedObject


def is_ranged(size: int, config: TransferConfig) -> bool:
    """Whether an object of ``size`` bytes is fetched as concurrent byte ranges."""
    return size > config.multipart_threshold


def split_parts(obj: PlannedObject, config: TransferConfig) -> list[Part]:
    """The parts of ``obj``: one unranged GET up to the threshold, else ``part_size`` ranges
    (none for an empty object: there is nothing to fetch)."""
    if not obj.size:
        return []
    if not is_ranged(obj.size, config):
        return [Part(obj, 0, 0, obj.size, False)]
    ps = config.part_size
    return [Part(obj, i, start, min(start + ps, obj.size), True) for i, start in enumerate(range(0, obj.size, ps))]


def missing_parts(parts: Iterable[Part], done: Iterable[tuple[int, int]]) -> list[Part]:
    """What ``parts`` still need once the ranges ``done`` (``[start, end)``, from an earlier run)
    are in the temp file: a part partly done (an interrupted range keeps what it wrote) leaves
    only its missing tail (or gaps), each a part of the same index."""
    ranges = sorted(done)
    out: list[Part] = []
    first = 0  # ranges before ``first`` end before the current part (parts come in order)
    for part in parts:
        while first < len(ranges) and ranges[first][1] <= part.start:
            first += 1
        pos, k = part.start, first
        while k < len(ranges) and ranges[k][0] < part.end:
            a, b = ranges[k]
            if a > pos:
                out.append(Part(part.obj, part.index, pos, a, part.ranged))
            pos, k = max(pos, b), k + 1
        if pos < part.end:
            out.append(Part(part.obj, part.index, pos, part.end, part.ranged))
    return out


def schedule(objects: Iterable[PlannedObject], config: TransferConfig) -> list[PlannedObject]:
    """Ranged objects first, largest first, so their long tails overlap the small files."""
    objects = list(objects)
    big = sorted((o for o in objects if is_ranged(o.size, config)), key=lambda o: -o.size)
    return big + [o for o in objects if not is_ranged(o.size, config)]
