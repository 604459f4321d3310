"""Verification against HCP's ``.xdlm`` checksum manifests.

* :mod:`.manifest`: parsing one manifest, and the :class:`ManifestIndex` over several;
* :mod:`.manifests`: fetching them (S3) or reading them (a local tree): :class:`ManifestSet`;
* :mod:`.checker`: checking files during a pull (:class:`PullVerifier`);
* :mod:`.tree`: checking a local tree (:func:`verify_tree`, ``hcpsync verify``), in steps:
  :mod:`.walk` and :mod:`.links` (the tree, symlinks followed inside it only), :mod:`.s3view`
  (what S3 holds), :mod:`.expected` and :mod:`.unlisted` (the files manifests list, and the
  others), :mod:`.etagcheck` (a file against its S3 ETag), :mod:`.hashpool`, :mod:`.report`;
* :mod:`.packages`: listing the packages of subjects (:func:`list_packages`);
* :mod:`.cache`: checksums already computed (:class:`VerifiedCache`);
* :mod:`.hashing`: MD5 of files, and what an S3 ETag says about it.

The names below are imported on first use: a pull, which fetches and checks manifests, does
not load the tree checker or the package lister.
"""

from __future__ import annotations

from .._lazy import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .cache import MemoryVerifiedCache, NullVerifiedCache, VerifiedCache
    from .checker import PullVerifier
    from .manifests import ManifestSet, fetch_manifests, load_local_manifests, manifest_notes
    from .packages import PackageInfo, PackagesReport, list_packages
    from .report import FileCheck, VerifyReport
    from .tree import verify_tree

_LAZY = {
    **dict.fromkeys(("MemoryVerifiedCache", "NullVerifiedCache", "VerifiedCache"), ".cache"),
    "PullVerifier": ".checker",
    **dict.fromkeys(("ManifestSet", "fetch_manifests", "load_local_manifests",
                     "manifest_notes"), ".manifests"),
    **dict.fromkeys(("PackageInfo", "PackagesReport", "list_packages"), ".packages"),
    **dict.fromkeys(("FileCheck", "VerifyReport"), ".report"),
    "verify_tree": ".tree",
}

__all__ = [
    "FileCheck",
    "ManifestSet",
    "MemoryVerifiedCache",
    "NullVerifiedCache",
    "PackageInfo",
    "PackagesReport",
    "PullVerifier",
    "VerifiedCache",
    "VerifyReport",
    "fetch_manifests",
    "list_packages",
    "load_local_manifests",
    "manifest_notes",
    "verify_tree",
]


__getattr__ = lazy_exports(__name__, _LAZY, globals())
