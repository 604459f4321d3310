"""A selection with ``--package``: HCP download packages resolved through the subjects'
``.xdlm`` manifests to exactly their files (:func:`plan_for`)."""

from __future__ import annotations

from ..models import Selection
from ..planfile import Plan
from ..store import ObjectStore
from ..verify.manifests import ManifestSet
from .listing import plan_with_manifests


def resolve_packages(manifests: ManifestSet, selection: Selection) -> tuple[dict[str, set[str]], list[str]]:
    """subject -> URIs of the selected packages in that subject's manifests; and notes.

    Raises :class:`~hcpsync.errors.SelectionError` (one line, listing the packages
    available) when a package is in no selected subject's manifests.
    """
    return manifests.package_uris(selection.subjects, selection.packages)


async def plan_for(storage: ObjectStore, selection: Selection) -> tuple[Plan, ManifestSet | None]:
    """The plan of ``selection``, honouring ``selection.packages``; and the manifests, if fetched
    (with packages: manifest problems, and each package file that its manifest lists but S3
    does not have, are in the plan's notes)."""
    return await plan_with_manifests(storage, selection)
