"""Verification against HCP's ``.xdlm`` checksum manifests, and package selection."""

from .core import (
    ManifestSet,
    MemoryVerifiedCache,
    NullVerifiedCache,
    PullVerifier,
    VerifiedCache,
    VerifyReport,
    list_packages,
    verify_tree,
)

__all__ = [
    "ManifestSet",
    "MemoryVerifiedCache",
    "NullVerifiedCache",
    "PullVerifier",
    "VerifiedCache",
    "VerifyReport",
    "list_packages",
    "verify_tree",
]
