"""PEP 562 lazy exports: the one ``__getattr__`` of the packages whose public names load on first
use (``hcpsync``, ``hcpsync.store``, ``hcpsync.verify``), so ``import hcpsync`` stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, object]) -> Callable[[str], object]:
    """A module ``__getattr__`` importing ``exports[name]`` (relative to ``package``) on first use
    and keeping the value in ``namespace`` (the package's globals), so it is looked up once."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
