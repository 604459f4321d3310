"""The planner (``build_plan``) against the in-memory store: no moto, no network."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from fakestore import FakeStore, Request

from hcpsync.errors import SelectionError, TransientError
from hcpsync.models import Selection
from hcpsync.planfile import Plan
from hcpsync.planning.listing import build_plan

BUCKET = "fake-bucket"
REL = "HCP_1200/"


def store(keys: dict[str, bytes] | list[str], page_size: int = 1000) -> FakeStore:
    fake = FakeStore(BUCKET, page_size=page_size)
    for key, data in (keys.items() if isinstance(keys, dict) else ((k, k.encode()) for k in keys)):
        fake.put(REL + key, data)
    return fake


def sel(*subjects: str, **kw: object) -> Selection:
    return Selection(subjects=subjects, bucket=BUCKET, **kw)  # type: ignore[arg-type]


def relpaths(plan: Plan) -> list[str]:
    return [o.relpath for o in plan.objects]


async def test_objects_map_to_key_minus_release_with_size_and_etag() -> None:
    fake = store({"100307/T1w/a.nii.gz": b"abc", "100307/T1w/b.nii.gz": b"defg"})
    plan = await build_plan(fake, sel("100307"))
    assert [(o.key, o.relpath, o.size, o.etag) for o in plan.objects] == [
        (REL + "100307/T1w/a.nii.gz", "100307/T1w/a.nii.gz", 3, fake.objects[REL + "100307/T1w/a.nii.gz"].etag),
        (REL + "100307/T1w/b.nii.gz", "100307/T1w/b.nii.gz", 4, fake.objects[REL + "100307/T1w/b.nii.gz"].etag),
    ]
    assert plan.rejected == () and plan.notes == ()


async def test_path_matches_at_segment_boundaries_and_lists_only_its_prefix() -> None:
    fake = store(["100307/T1w", "100307/T1w/x.nii", "100307/T1w/sub/y.nii", "100307/T1w_extra/z.nii",
                  "100307/T1wx.nii", "100307/MNINonLinear/m.nii"])
    # the key "T1w" itself is also a folder of other keys: refused, not planned
    plan = await build_plan(fake, sel("100307", paths=("T1w",)))
    assert relpaths(plan) == ["100307/T1w/sub/y.nii", "100307/T1w/x.nii"]
    assert [r.key for r in plan.rejected] == [REL + "100307/T1w"]
    assert [r.key for r in fake.log] == [REL + "100307/T1w"]  # one listing, of the path's prefix only


async def test_nested_paths_are_listed_once() -> None:
    fake = store(["100307/T1w/x.nii", "100307/T1w/xfms/a.nii"])
    plan = await build_plan(fake, sel("100307", paths=("T1w/xfms", "T1w")))
    assert relpaths(plan) == ["100307/T1w/x.nii", "100307/T1w/xfms/a.nii"]
    assert fake.counts["list"] == 1


async def test_globs_match_the_release_relative_key_and_star_crosses_slashes() -> None:
    fake = store(["100307/T1w/a.nii.gz", "100307/T1w/deep/b.nii.gz", "100307/T1w/c.txt", "100408/T1w/d.nii.gz"])
    plan = await build_plan(fake, sel("100307", "100408", includes=("*.nii.gz",), excludes=("100408/*",)))
    assert relpaths(plan) == ["100307/T1w/a.nii.gz", "100307/T1w/deep/b.nii.gz"]
    plan = await build_plan(fake, sel("100307", includes=("100307/T1w/*",), excludes=("*/deep/*",)))
    assert relpaths(plan) == ["100307/T1w/a.nii.gz", "100307/T1w/c.txt"]


async def test_glob_matching_nothing_is_an_error() -> None:
    with pytest.raises(SelectionError, match="matches no object"):
        await build_plan(store(["100307/T1w/a.nii"]), sel("100307", includes=("*.gii",)))


async def test_unknown_subject_is_an_error_naming_it() -> None:
    fake = store(["100307/T1w/a.nii"])
    with pytest.raises(SelectionError, match=r"subject 999999 not found under s3://fake-bucket/HCP_1200/"):
        await build_plan(fake, sel("100307", "999999"))
    # with a path: the subject is looked for as a whole (a delimited listing) before it is called unknown
    fake.log.clear()
    with pytest.raises(SelectionError, match="999999"):
        await build_plan(fake, sel("100307", "999999", paths=("T1w",)))
    assert Request("list", REL + "999999/") in fake.log


async def test_path_missing_for_some_subjects_is_a_note_and_for_all_an_error() -> None:
    fake = store(["100307/T1w/a.nii", "100307/MNINonLinear/m.nii", "100408/MNINonLinear/n.nii"])
    plan = await build_plan(fake, sel("100307", "100408", paths=("T1w",)))
    assert relpaths(plan) == ["100307/T1w/a.nii"]
    assert plan.notes == ("path 'T1w' matches nothing for subject(s) 100408",)
    with pytest.raises(SelectionError, match="path 'T2w' matches nothing"):
        await build_plan(fake, sel("100307", "100408", paths=("T2w",)))


async def test_file_folder_clash_refuses_the_file_keeps_the_folder() -> None:
    fake = store(["100307/T1w/a", "100307/T1w/a/b.nii", "100307/T1w/c.nii"])
    plan = await build_plan(fake, sel("100307"))
    assert relpaths(plan) == ["100307/T1w/a/b.nii", "100307/T1w/c.nii"]
    assert [r.key for r in plan.rejected] == [REL + "100307/T1w/a"]
    assert "both a file and a folder" in plan.rejected[0].reason


async def test_case_and_unicode_collisions_refuse_every_key_of_the_group() -> None:
    nfc, nfd = "100307/T1w/caf\u00e9.nii", "100307/T1w/cafe\u0301.nii"
    fake = store(["100307/T1w/a.nii", "100307/T1W/A.nii", nfc, nfd, "100307/T1w/ok.nii"])
    plan = await build_plan(fake, sel("100307"))
    assert relpaths(plan) == ["100307/T1w/ok.nii"]
    assert sorted(r.key for r in plan.rejected) == sorted(REL + k for k in ["100307/T1w/a.nii", "100307/T1W/A.nii", nfc, nfd])
    assert all("differs only by case or Unicode" in r.reason for r in plan.rejected)


async def test_unsafe_keys_and_folder_markers() -> None:
    fake = store(["100307/T1w/", "100307/T1w/../../etc/passwd", "100307/T1w/ok.nii"])
    fake.put(REL + "100307/T1w/", b"")  # an S3 console "folder": skipped, not refused
    plan = await build_plan(fake, sel("100307"))
    assert relpaths(plan) == ["100307/T1w/ok.nii"]
    assert [r.key for r in plan.rejected] == [REL + "100307/T1w/../../etc/passwd"]
    assert plan.rejected[0].reason.startswith("unsafe key")


async def test_pagination_across_pages_loses_and_repeats_nothing() -> None:
    keys = [f"100307/T1w/f{i:04d}.nii" for i in range(23)]
    fake = store(keys, page_size=5)
    plan = await build_plan(fake, sel("100307"))
    assert relpaths(plan) == keys
    assert fake.counts["list"] == 1 + 5  # the subject's delimited listing (its folders), then 23 keys, 5 a page


async def test_restrict_narrows_subjects_to_exact_files() -> None:
    fake = store(["100307/T1w/a.nii", "100307/T1w/b.nii", "100408/T1w/c.nii"])
    plan = await build_plan(fake, sel("100307", "100408"), restrict={"100307": {"100307/T1w/b.nii"}})
    assert relpaths(plan) == ["100307/T1w/b.nii", "100408/T1w/c.nii"]


async def test_listing_errors_reach_the_caller() -> None:
    fake = store(["100307/T1w/a.nii"])
    fake.fail(REL + "100307/", TransientError("boom"))
    with pytest.raises(TransientError, match="boom"):
        await build_plan(fake, sel("100307"))


# -- the streaming lister: units, announced when complete --------------------------------------


class _Recorder:
    """A plan table that records what was planned in which unit, and when units were announced."""

    def __init__(self) -> None:
        from hcpsync.journal.plan import PlanTable
        from hcpsync.planfile import open_plan_db, scratch_plan_path

        self.path = scratch_plan_path()
        self.db = open_plan_db(self.path)
        self.table = PlanTable(self.db, 1)
        self.units: list[tuple[int, list[str]]] = []  # announced: (unit, its keys then)

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.path.parent)

    def announce(self, unit: int) -> None:
        self.units.append((unit, [r.obj.key[len(REL):] for r in self.table.page(unit, "", 10_000)]))


@pytest.fixture
def rec() -> Iterator[_Recorder]:
    recorder = _Recorder()
    yield recorder
    recorder.close()  # no database left for the garbage collector (tests count open files)


async def test_units_are_announced_complete_and_fold_equal_folders_are_one_unit(rec: _Recorder) -> None:
    from hcpsync.planning.stream import Lister

    keys = [f"100307/MNINonLinear/m{i:02d}.nii" for i in range(7)] + ["100307/T1w/a.nii", "100307/t1w/A.nii",
                                                                        "100307/T1w/b.nii", "100307/top.txt"]
    await Lister(store(keys, page_size=2), sel("100307"), rec.table, on_unit=rec.announce).run()
    announced = dict(rec.units)
    assert len(announced) == len(rec.units)  # each unit once
    # T1w/ and t1w/ fold to one name: one unit, listed whole before it was announced, the colliding
    # pair refused across its pages; the other folder and the subject's top level units of their own
    by_keys = {tuple(sorted(v)) for v in announced.values()}
    assert ("100307/T1w/b.nii",) in by_keys
    assert tuple(sorted(k for k in keys if "MNINonLinear" in k)) in by_keys
    assert ("100307/top.txt",) in by_keys
    assert {r.key[len(REL):] for r in rec.table.rejected()} == {"100307/T1w/a.nii", "100307/t1w/A.nii"}


async def test_a_file_named_as_a_folder_of_a_later_page_is_refused_before_its_unit_is_announced(
    rec: _Recorder,
) -> None:
    from hcpsync.planning.stream import Lister

    # the subject's top level lists "T1w" (a file) on one page and "T1w/" (a folder) on the next
    keys = ["100307/A.txt", "100307/T1w", "100307/T1w/x.nii", "100307/Z.txt"]
    await Lister(store(keys, page_size=2), sel("100307"), rec.table, on_unit=rec.announce).run()
    announced = [k for _, ks in rec.units for k in ks]
    assert "100307/T1w" not in announced
    assert sorted(announced) == ["100307/A.txt", "100307/T1w/x.nii", "100307/Z.txt"]
    assert [r.key for r in rec.table.rejected()] == [REL + "100307/T1w"]


async def test_subjects_differing_only_by_case_are_refused() -> None:
    with pytest.raises(SelectionError, match="differ only by case"):
        await build_plan(store(["abc/x", "ABC/y"]), sel("abc", "ABC"))
