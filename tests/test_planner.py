"""Planner: listing, pagination, path/glob selection, local layout, refusals."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import fast_put

from hcpsync import Selection, plan
from hcpsync.errors import SelectionError
from hcpsync.planning.listing import minimal_paths, under_path


async def _plan(url: str, **kw: Any) -> Any:
    return await plan(Selection(**kw), endpoint_url=url)


async def test_local_path_is_key_minus_release(moto_url: str, bucket: str) -> None:
    fast_put(bucket, {"HCP_1200/100307/T1w/x.nii.gz": b"abc", "HCP_1200/100307/release-notes/r.txt": b"n"})
    p = await _plan(moto_url, subjects=["100307"], bucket=bucket)
    assert [(o.key, o.relpath, o.size) for o in p.objects] == [
        ("HCP_1200/100307/T1w/x.nii.gz", "100307/T1w/x.nii.gz", 3),
        ("HCP_1200/100307/release-notes/r.txt", "100307/release-notes/r.txt", 1),
    ]
    assert all(len(o.etag) == 32 for o in p.objects)


async def test_pagination_over_1000_keys(moto_url: str, bucket: str) -> None:
    keys = {f"HCP_1200/100307/MNINonLinear/Results/f{i:05d}.txt": b"x" for i in range(2345)}
    fast_put(bucket, keys)
    p = await _plan(moto_url, subjects=["100307"], bucket=bucket)
    assert {o.key for o in p.objects} == set(keys)


@pytest.mark.parametrize("release", ["q1", "HCP_Retest", "HCP_1200"])
async def test_releases_are_prefixes(moto_url: str, bucket: str, release: str) -> None:
    fast_put(bucket, {f"{r}/100307/T1w/a": r.encode() for r in ("q1", "HCP_Retest", "HCP_1200")})
    p = await _plan(moto_url, subjects=["100307"], bucket=bucket, release=release)
    assert [o.key for o in p.objects] == [f"{release}/100307/T1w/a"]
    assert p.objects[0].relpath == "100307/T1w/a"


async def test_path_matches_at_segment_boundaries(moto_url: str, bucket: str) -> None:
    fast_put(bucket, {
        "HCP_1200/100307/T1w/a.nii.gz": b"1",
        "HCP_1200/100307/T1w/sub/b.nii.gz": b"2",
        "HCP_1200/100307/T1w_extra/c.nii.gz": b"3",
        "HCP_1200/100307/T1wx": b"4",
        "HCP_1200/100307/MNINonLinear/d": b"5",
    })
    p = await _plan(moto_url, subjects=["100307"], bucket=bucket, paths=["T1w"])
    assert sorted(o.relpath for o in p.objects) == ["100307/T1w/a.nii.gz", "100307/T1w/sub/b.nii.gz"]
    p = await _plan(moto_url, subjects=["100307"], bucket=bucket, paths=["T1w/", "T1w/sub", "MNINonLinear/d"])
    assert sorted(o.relpath for o in p.objects) == ["100307/MNINonLinear/d", "100307/T1w/a.nii.gz", "100307/T1w/sub/b.nii.gz"]


async def test_multi_subject_and_globs(moto_url: str, bucket: str) -> None:
    objs = {f"HCP_1200/{s}/T1w/{n}": b"x" * i for i, s in enumerate(["100307", "100408", "101915"])
            for n in ("a.nii.gz", "b.txt", "c.png")}
    fast_put(bucket, objs)
    p = await _plan(moto_url, subjects=["100307", "100408"], bucket=bucket, includes=["*.nii.gz", "*.png"],
                    excludes=["100408/*.png"])
    assert sorted(o.relpath for o in p.objects) == ["100307/T1w/a.nii.gz", "100307/T1w/c.png", "100408/T1w/a.nii.gz"]
    assert p.per_subject() == {"100307": (2, 0), "100408": (1, 1)}


async def test_unknown_subject_is_an_error_naming_it(moto_url: str, bucket: str) -> None:
    fast_put(bucket, {"HCP_1200/100307/T1w/a": b"1"})
    with pytest.raises(SelectionError, match="999999"):
        await _plan(moto_url, subjects=["100307", "999999"], bucket=bucket)
    with pytest.raises(SelectionError, match="999999"):
        await _plan(moto_url, subjects=["999999"], bucket=bucket, paths=["T1w"])


async def test_path_matching_nothing_is_an_error(moto_url: str, bucket: str) -> None:
    fast_put(bucket, {"HCP_1200/100307/T1w/a": b"1", "HCP_1200/100408/T1w/a": b"1", "HCP_1200/100408/T2w/a": b"1"})
    with pytest.raises(SelectionError, match="'MNINonLinear'"):
        await _plan(moto_url, subjects=["100307"], bucket=bucket, paths=["MNINonLinear"])
    # missing for one subject only: a note, not an error
    p = await _plan(moto_url, subjects=["100307", "100408"], bucket=bucket, paths=["T2w"])
    assert [o.relpath for o in p.objects] == ["100408/T2w/a"]
    assert any("100307" in n for n in p.notes)


async def test_unsafe_and_clashing_keys_are_refused(moto_url: str, bucket: str) -> None:
    fast_put(bucket, {
        "HCP_1200/100307/ok.txt": b"1",
        "HCP_1200/100307/../../escape.txt": b"2",
        "HCP_1200/100307//double": b"3",
        "HCP_1200/100307/back\\slash": b"4",
        "HCP_1200/100307/dir/file": b"5",
        "HCP_1200/100307/dir/file/x": b"6",
        "HCP_1200/100307/folder/": b"",
    })
    p = await _plan(moto_url, subjects=["100307"], bucket=bucket)
    assert sorted(o.relpath for o in p.objects) == ["100307/dir/file/x", "100307/ok.txt"]
    refused = {r.key for r in p.rejected}
    assert refused == {"HCP_1200/100307/../../escape.txt", "HCP_1200/100307//double",
                       "HCP_1200/100307/back\\slash", "HCP_1200/100307/dir/file"}


def test_selection_validation() -> None:
    with pytest.raises(SelectionError, match="malformed subject"):
        Selection(subjects=["10/0307"])
    with pytest.raises(SelectionError, match=r"\.\."):
        Selection(subjects=["100307"], paths=["../x"])
    with pytest.raises(SelectionError, match="no subject"):
        Selection(subjects=[])
    assert Selection(subjects=["100307"], release="/q1/", paths=["/T1w/"][:0] or ["T1w/"]).paths == ("T1w",)


def test_minimal_paths_and_under_path() -> None:
    assert minimal_paths(["T1w/sub", "T1w", "T2w"]) == ("T1w", "T2w")
    assert under_path("T1w", "T1w") and under_path("T1w/a", "T1w")
    assert not under_path("T1w_extra/a", "T1w")
