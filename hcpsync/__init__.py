"""hcpsync: async, resumable, checksum-verified bulk downloads of HCP data on S3.

The names below are imported when first used (PEP 562): ``import hcpsync`` or ``hcpsync --version``
loads no network stack (aiohttp, botocore), ``hcpsync.Selection`` only the models, ``hcpsync.pull``
what a pull needs.  ``from hcpsync import pull, Selection`` works as with eager imports.
"""

from __future__ import annotations

from ._lazy import lazy_exports
from .version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from .api import (
        Mirror,
        SubjectMirror,
        check,
        check_sync,
        last_selection,
        plan,
        plan_sync,
        pull,
        pull_sync,
        repair,
        repair_sync,
        run_sync,
    )
    from .config import TransferConfig
    from .engine.progress import ProgressEvent
    from .errors import HcpsyncError
    from .models import PlannedObject, PullReport, Selection
    from .planfile import Plan
    from .store.options import StorageOptions
    from .verify.tree import VerifyReport, verify_tree

#: public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(("Mirror", "SubjectMirror", "check", "check_sync", "last_selection", "plan", "plan_sync", "pull",
                     "pull_sync", "repair", "repair_sync", "run_sync"), ".api"),
    "TransferConfig": ".config",
    "ProgressEvent": ".engine.progress",
    "HcpsyncError": ".errors",
    **dict.fromkeys(("PlannedObject", "PullReport", "Selection"), ".models"),
    "Plan": ".planfile",
    "StorageOptions": ".store.options",
    **dict.fromkeys(("VerifyReport", "verify_tree"), ".verify.tree"),
}

__all__ = [
    "HcpsyncError",
    "Mirror",
    "Plan",
    "PlannedObject",
    "ProgressEvent",
    "PullReport",
    "Selection",
    "StorageOptions",
    "SubjectMirror",
    "TransferConfig",
    "VerifyReport",
    "__version__",
    "check",
    "check_sync",
    "last_selection",
    "plan",
    "plan_sync",
    "pull",
    "pull_sync",
    "repair",
    "repair_sync",
    "run_sync",
    "verify_tree",
]


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
