"""hcpsync: async, resumable, checksum-verified bulk downloads of HCP data on S3."""

from .api import Mirror, SubjectMirror, check, check_sync, last_selection, plan, plan_sync, pull, pull_sync, run_sync
from .config import TransferConfig
from .engine.progress import ProgressEvent
from .errors import HcpsyncError
from .models import Plan, PlannedObject, PullReport, Selection
from .store.s3 import StorageOptions
from .verify import VerifyReport, verify_tree
from .version import __version__

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
    "run_sync",
    "verify_tree",
]
