"""Selections as users write them: a lone string is one item; aws-cli's ordered --include/--exclude."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import fast_put, plan_doc

from hcpsync import Mirror, Selection, plan_sync
from hcpsync.cli import main
from hcpsync.errors import SelectionError

TREE = {
    "HCP_1200/100307/T1w/a.nii.gz": b"1",
    "HCP_1200/100307/T1w/tiny_b.txt": b"2",
    "HCP_1200/100307/T1w/c.gii": b"3",
    "HCP_1200/100307/MNINonLinear/d.nii.gz": b"4",
    "HCP_1200/100307/MNINonLinear/tiny_e.nii.gz": b"5",
    "HCP_1200/100408/T1w/a.nii.gz": b"6",
    "HCP_1200/100408/T1w/tiny_f.txt": b"7",
}


@pytest.fixture
def hcp(bucket: str) -> str:
    fast_put(bucket, TREE)
    return bucket


def _keys(plan: Any) -> list[str]:
    return sorted(o.key.split("/", 1)[1] for o in plan.objects)


def test_lone_strings_are_one_item(moto_url: str, hcp: str) -> None:
    sel = Selection(subjects="100307", bucket=hcp, includes="*.nii.gz", excludes="*tiny*")
    assert sel.includes == ("*.nii.gz",) and sel.subjects == ("100307",)
    assert _keys(plan_sync(sel, endpoint_url=moto_url)) == ["100307/MNINonLinear/d.nii.gz", "100307/T1w/a.nii.gz"]
    sel = Selection(subjects=["100307"], bucket=hcp, paths="T1w", packages=())
    assert _keys(plan_sync(sel, endpoint_url=moto_url)) == [
        "100307/T1w/a.nii.gz", "100307/T1w/c.gii", "100307/T1w/tiny_b.txt"]
    with pytest.raises(SelectionError, match="pairs"):
        Selection(subjects=["100307"], filters="*.gz")  # type: ignore[arg-type]


def test_mirror_files_takes_a_lone_include(moto_url: str, hcp: str, tmp_path: Path) -> None:
    files = Mirror(tmp_path, bucket=hcp, endpoint_url=moto_url).subject("100307").files("T1w", include="*.gz")
    assert files == [tmp_path / "100307/T1w/a.nii.gz"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()
                  and ".hcpsync" not in p.parts) == ["100307/T1w/a.nii.gz"]


def _cli_plan(capsys: pytest.CaptureFixture[str], url: str, bucket: str, *args: str) -> tuple[int, list[str]]:
    code = main(["plan", "--json", "--endpoint-url", url, "--bucket", bucket, *args])
    out = capsys.readouterr().out
    return code, sorted(o["key"].split("/", 1)[1] for o in plan_doc(out)["objects"]) if code == 0 else []


def test_exclude_all_then_include_is_aws_cli_idiom(moto_url: str, hcp: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, keys = _cli_plan(capsys, moto_url, hcp, "--subject", "100307", "--subject", "100408",
                           "--exclude", "*", "--include", "*tiny*")
    assert code == 0
    assert keys == ["100307/MNINonLinear/tiny_e.nii.gz", "100307/T1w/tiny_b.txt", "100408/T1w/tiny_f.txt"]
    # the last match wins: include, then exclude a part of it
    code, keys = _cli_plan(capsys, moto_url, hcp, "--subject", "100307", "--include", "*.nii.gz",
                           "--exclude", "*tiny*")
    assert keys == ["100307/MNINonLinear/d.nii.gz", "100307/T1w/a.nii.gz"]


@pytest.mark.parametrize(("pattern", "expected"), [
    ("T1w/*", ["100307/T1w/a.nii.gz", "100307/T1w/c.gii", "100307/T1w/tiny_b.txt",
               "100408/T1w/a.nii.gz", "100408/T1w/tiny_f.txt"]),          # relative to the subject, as --path
    ("HCP_1200/100408/*", ["100408/T1w/a.nii.gz", "100408/T1w/tiny_f.txt"]),  # the full key
    ("100307/T1w/*.gii", ["100307/T1w/c.gii"]),                          # relative to the release, as before
    ("*.gii", ["100307/T1w/c.gii"]),
])
def test_what_a_pattern_is_matched_against(moto_url: str, hcp: str, capsys: pytest.CaptureFixture[str],
                                           pattern: str, expected: list[str]) -> None:
    code, keys = _cli_plan(capsys, moto_url, hcp, "--subject", "100307", "--subject", "100408", "--include", pattern)
    assert (code, keys) == (0, expected)
