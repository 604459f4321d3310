"""Worker processes: a coordinator (the pull's own process) and workers that own connections
and bytes.  ``wire`` (the typed messages), ``worker`` (a worker's main), ``workerset`` (the
coordinator's side)."""

from .workerset import WorkerSet, usable_cores, worker_config

__all__ = ["WorkerSet", "usable_cores", "worker_config"]
