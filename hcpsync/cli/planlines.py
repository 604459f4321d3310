"""``hcpsync plan --json``: JSON Lines, written as the plan grows.

One line per planned object (``{"type": "object", "key", "size", "etag", "path"}``), printed as
each listing unit (a folder) is planned, in key order within it; at the end one line per refused key
(``{"type": "rejected", "key", "reason"}``) and a summary line (``{"type": "summary", ...}``:
what ``plan`` prints as text, with ``selection``, ``files``, ``bytes``, ``subjects``,
``top_folders``, ``notes`` and ``saved``).  Plain ASCII JSON, one document a line.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, TextIO

from ..planfile import object_json

if TYPE_CHECKING:
    from ..journal.plan import PlanTable
    from ..models import PlannedObject
    from ..planfile import Plan

#: rows read back from the plan at a time
_BATCH = 2000


class PlanLines:
    """Prints a plan's objects as JSON Lines on ``out`` while it is being listed (:meth:`page`)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def unit(self, table: PlanTable, unit: int) -> None:
        """A listing unit is planned in ``table``: print its objects, and flush."""
        after = ""
        while True:
            rows = table.page(unit, after, _BATCH)
            if not rows:
                break
            after = rows[-1].obj.key
            self.out.write("".join(_object(r.obj) for r in rows if r.obj.key not in table.refused))
        self.out.flush()

    def objects(self, plan: Plan) -> None:
        """Every object of a plan made beforehand (a saved one), in key order."""
        self.out.write("".join(_object(o) for o in plan.iter_objects()))
        self.out.flush()

    def finish(self, plan: Plan) -> None:
        """The refused keys and the summary line."""
        for r in plan.rejected:
            self.out.write(_line({"type": "rejected", "key": r.key, "reason": r.reason}))
        doc = {"type": "summary", **plan.to_json(with_objects=False),
               "top_folders": [{"folder": f, "files": n, "bytes": b} for f, n, b in plan.top_folders()]}
        doc.pop("rejected", None)
        self.out.write(_line(doc))
        self.out.flush()


def _object(o: PlannedObject) -> str:
    return _line({"type": "object", **object_json(o)})


def _line(doc: dict[str, object]) -> str:
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")) + "\n"
