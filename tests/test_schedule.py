"""planning.schedule: the one place that decides ranges, splits objects into parts, and works out
what a resumed file still needs."""

from __future__ import annotations

import random

from hcpsync.config import TransferConfig
from hcpsync.models import Part, PlannedObject
from hcpsync.planning.schedule import is_ranged, missing_parts, schedule, split_parts


def test_missing_parts_cover_exactly_what_is_not_done() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        size, part_size = rng.randint(1, 300), rng.randint(1, 50)
        obj = PlannedObject("k", size, "e", "k")
        parts = [Part(obj, i, s, min(s + part_size, size), True) for i, s in enumerate(range(0, size, part_size))]
        done = [(a, rng.randint(a + 1, size)) for a in (rng.randint(0, size - 1) for _ in range(rng.randint(0, 6)))]
        todo = missing_parts(parts, done)
        covered = {b for a, z in done for b in range(a, z)}
        fetched = [b for t in todo for b in range(t.start, t.end)]
        assert sorted(fetched) == sorted(set(range(size)) - covered)  # every missing byte once, nothing done
        assert all(parts[t.index].start <= t.start < t.end <= parts[t.index].end for t in todo)  # within its part


def test_split_and_schedule_use_the_one_predicate() -> None:
    cfg = TransferConfig(part_size=64 * 1024, multipart_threshold=100_000)
    small, edge, big = (PlannedObject(k, n, "e", k) for k, n in (("s", 10), ("e", 100_000), ("b", 300_000)))
    assert not is_ranged(edge.size, cfg) and is_ranged(big.size, cfg)
    assert [p.ranged for p in split_parts(edge, cfg)] == [False] and split_parts(PlannedObject("z", 0, "e", "z"), cfg) == []
    assert [(p.start, p.end) for p in split_parts(big, cfg)][-1] == (262144, 300_000)
    assert [o.key for o in schedule([small, edge, big], cfg)] == ["b", "s", "e"]
