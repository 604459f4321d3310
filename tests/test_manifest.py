"""hcpsync.verify.manifest: parsing .xdlm manifests defensively, and the index over them."""

from __future__ import annotations

import json

import pytest

from hcpsync.errors import HcpsyncError, ManifestError, SelectionError
from hcpsync.verify.manifest import (
    Manifest,
    ManifestEntry,
    ManifestIndex,
    is_manifest_key,
    manifest_name_info,
    parse_manifest,
)

NAME = "100307_3T_tfMRI_MOTOR_preproc.json"
MD5_A = "0123456789abcdef0123456789abcdef"
MD5_B = "fedcba9876543210fedcba9876543210"
MD5_C = "00000000000000000000000000000001"


def doc(*entries: object) -> bytes:
    return json.dumps({"DownloadManifest": {"Includes": list(entries)}}).encode()


def uris(m: Manifest) -> list[str]:
    return [e.uri for e in m.entries]


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (NAME, ("100307", "3T", "3T_tfMRI_MOTOR_preproc")),
        ("100307_7T_rfMRI_REST1_unproc.json", ("100307", "7T", "7T_rfMRI_REST1_unproc")),
        ("100307_MEG_anatomy.json", ("100307", None, "MEG_anatomy")),
        ("HCP_1200/100307/.xdlm/100307_3T_Structural_preproc.json", ("100307", "3T", "3T_Structural_preproc")),
    ],
)
def test_manifest_name_info(name: str, expected: tuple[str, str | None, str]) -> None:
    assert manifest_name_info(name) == expected


@pytest.mark.parametrize("name", ["100307.json", "100307_3T_x.txt", "_3T_x.json", "100307_.json"])
def test_manifest_name_info_refuses_odd_names(name: str) -> None:
    with pytest.raises(ManifestError):
        manifest_name_info(name)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("HCP_1200/100307/.xdlm/100307_3T_tfMRI_MOTOR_preproc.json", True),
        ("100307/.xdlm/100307_3T_Structural_unproc.json", True),
        ("HCP_1200/100307/.xdlm/100307_3T_tfMRI_MOTOR_preproc.JSON", True),
        ("HCP_1200/100307/xdlm/100307_3T_tfMRI_MOTOR_preproc.json", False),
        ("HCP_1200/100307/.xdlm/100408_3T_tfMRI_MOTOR_preproc.json", False),  # other subject's name
        ("HCP_1200/100307/.xdlm/100307_3T_notes.txt", False),
        ("HCP_1200/100307/.xdlm/", False),
        ("HCP_1200/100307/.xdlm/100307_.json", False),
        (".xdlm/100307_3T_x.json", False),
        ("HCP_1200/100307/T1w/100307_3T.json", False),
    ],
)
def test_is_manifest_key(key: str, expected: bool) -> None:
    assert is_manifest_key(key) is expected


# --- accepted shapes -------------------------------------------------------------------------


def test_one_line_manifest() -> None:
    data = doc(
        {"URI": "100307/MNINonLinear/Results/tfMRI_MOTOR_LR/Movement_Regressors.txt", "Checksum": MD5_A},
        {"URI": "100307/T1w/T1w_acpc_dc_restore_brain.nii.gz", "Checksum": MD5_B.upper(), "Size": 1234},
    )
    assert b"\n" not in data
    m = parse_manifest(NAME, data)
    assert (m.name, m.subject, m.field, m.package) == (NAME, "100307", "3T", "3T_tfMRI_MOTOR_preproc")
    assert m.entries == (
        ManifestEntry("100307/MNINonLinear/Results/tfMRI_MOTOR_LR/Movement_Regressors.txt", MD5_A, None),
        ManifestEntry("100307/T1w/T1w_acpc_dc_restore_brain.nii.gz", MD5_B, 1234),  # lower-cased
    )
    assert m.problems == ()


def test_pretty_printed_manifest_with_bom_and_unknown_fields() -> None:
    raw = {
        "DownloadManifest": {
            "ID": "xyz",
            "Project": "HCP_1200",
            "Nested": {"a": [1, 2, {"b": None}]},
            "Includes": [
                {
                    "URI": "100307/T1w/T1w_acpc_dc.nii.gz",
                    "Checksum": MD5_A,
                    "ChecksumType": "MD5",
                    "Type": "file",
                    "Size": "70800000",
                    "Extra": {"anything": ["goes"]},
                }
            ],
        },
        "Signature": "ignored",
    }
    data = b"\xef\xbb\xbf" + json.dumps(raw, indent=4).encode()
    m = parse_manifest(NAME, data)
    assert m.entries == (ManifestEntry("100307/T1w/T1w_acpc_dc.nii.gz", MD5_A, 70_800_000),)
    assert m.problems == ()


def test_bare_list_of_entries() -> None:
    data = json.dumps([{"uri": "100307/a.txt", "md5": MD5_A}, {"URI": "./100307/b.txt", "checksum": MD5_B}])
    m = parse_manifest(NAME, data.encode())
    assert m.entries == (ManifestEntry("100307/a.txt", MD5_A, None), ManifestEntry("100307/b.txt", MD5_B, None))


@pytest.mark.parametrize(
    "data",
    [
        {"downloadmanifest": {"includes": [{"Uri": "100307/a.txt", "CHECKSUM": MD5_A}]}},
        {"Includes": [{"URI": "100307/a.txt", "MD5": MD5_A}]},  # no wrapper
        {"DownloadManifest": [{"URI": "100307/a.txt", "Checksum": MD5_A}]},  # wrapper holds the list
    ],
)
def test_key_spellings_and_wrappers(data: object) -> None:
    m = parse_manifest(NAME, json.dumps(data).encode())
    assert m.entries == (ManifestEntry("100307/a.txt", MD5_A, None),)
    assert m.problems == ()


def test_empty_includes_is_an_empty_manifest() -> None:
    m = parse_manifest(NAME, doc())
    assert m.entries == () and m.problems == ()


def test_entry_without_checksum_is_kept_unverified() -> None:
    m = parse_manifest(NAME, doc({"URI": "100307/a.txt"}, {"URI": "100307/b.txt", "Checksum": None},
                                 {"URI": "100307/c.txt", "Checksum": ""}))
    assert [(e.uri, e.md5) for e in m.entries] == [("100307/a.txt", None), ("100307/b.txt", None),
                                                    ("100307/c.txt", None)]
    assert m.problems == ()


def test_non_md5_checksum_type_is_not_used() -> None:
    m = parse_manifest(NAME, doc({"URI": "100307/a.txt", "Checksum": MD5_A, "ChecksumType": "SHA1"}))
    assert m.entries == (ManifestEntry("100307/a.txt", None, None),)
    assert len(m.problems) == 1 and "SHA1" in m.problems[0]


@pytest.mark.parametrize("size", [-1, True, "12a", 1.5, None, [3]])
def test_unusable_size_becomes_none(size: object) -> None:
    m = parse_manifest(NAME, doc({"URI": "100307/a.txt", "Checksum": MD5_A, "Size": size}))
    assert m.entries == (ManifestEntry("100307/a.txt", MD5_A, None),)


# --- duplicates ------------------------------------------------------------------------------


def test_duplicate_uri_same_checksum_is_merged() -> None:
    m = parse_manifest(NAME, doc(
        {"URI": "100307/a.txt", "Checksum": MD5_A},
        {"URI": "100307/b.txt", "Checksum": MD5_B},
        {"URI": "./100307/a.txt", "Checksum": MD5_A.upper(), "Size": 7},
    ))
    assert m.entries == (ManifestEntry("100307/a.txt", MD5_A, 7), ManifestEntry("100307/b.txt", MD5_B, None))
    assert m.problems == ()


def test_duplicate_uri_missing_checksum_takes_the_known_one() -> None:
    m = parse_manifest(NAME, doc({"URI": "100307/a.txt"}, {"URI": "100307/a.txt", "Checksum": MD5_A}))
    assert m.entries == (ManifestEntry("100307/a.txt", MD5_A, None),)
    assert m.problems == ()


def test_duplicate_uri_conflicting_checksums_is_a_problem() -> None:
    m = parse_manifest(NAME, doc(
        {"URI": "100307/a.txt", "Checksum": MD5_A, "Size": 5},
        {"URI": "100307/a.txt", "Checksum": MD5_B, "Size": 5},
        {"URI": "100307/a.txt", "Checksum": MD5_C},
        {"URI": "100307/b.txt", "Checksum": MD5_B},
    ))
    # kept once, but never trusted for verification
    assert m.entries == (ManifestEntry("100307/a.txt", None, 5), ManifestEntry("100307/b.txt", MD5_B, None))
    assert len(m.problems) == 1
    assert "100307/a.txt" in m.problems[0] and MD5_A in m.problems[0] and MD5_B in m.problems[0]


# --- bad entries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "../../etc/passwd",
        "/abs",
        "/etc/passwd",
        "100307/../x",
        "100307/../../x",
        "100307/./x",
        "100307//x",
        "100307/x/",
        "100307\\..\\x",
        "C:/x",
        "100307/x\x00y",
        "",
        ".hcpsync/journal",
        "100307/x.hcpsync-part",
    ],
)
def test_unsafe_uris_are_problems_not_entries(uri: str) -> None:
    m = parse_manifest(NAME, doc({"URI": uri, "Checksum": MD5_A}, {"URI": "100307/ok.txt", "Checksum": MD5_B}))
    assert uris(m) == ["100307/ok.txt"]
    assert len(m.problems) == 1
    assert "entry #0" in m.problems[0] and "unsafe URI" in m.problems[0]
    assert "\n" not in m.problems[0]


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("100307/a.txt", "expected an object, got str"),
        (["100307/a.txt", MD5_A], "expected an object, got list"),
        (None, "expected an object, got NoneType"),
        (42, "expected an object, got int"),
        ({"Checksum": MD5_A}, "no URI"),
        ({"URI": 17, "Checksum": MD5_A}, "URI is int"),
        ({"URI": None}, "URI is NoneType"),
        ({"URI": "100307/a.txt", "Checksum": 12345}, "not an MD5"),
        ({"URI": "100307/a.txt", "Checksum": "abc"}, "not an MD5"),
        ({"URI": "100307/a.txt", "Checksum": "g" * 32}, "not an MD5"),
        ({"URI": "100307/a.txt", "Checksum": MD5_A + "00"}, "not an MD5"),
        ({"URI": "100307/a.txt", "Checksum": [MD5_A]}, "not an MD5"),
    ],
)
def test_bad_entries_are_dropped_with_a_problem(entry: object, fragment: str) -> None:
    m = parse_manifest(NAME, doc({"URI": "100307/first.txt", "Checksum": MD5_A}, entry,
                                 {"URI": "100307/last.txt", "Checksum": MD5_B}))
    assert uris(m) == ["100307/first.txt", "100307/last.txt"]
    assert len(m.problems) == 1
    assert m.problems[0].startswith("entry #1") and fragment in m.problems[0]


def test_many_bad_entries_all_reported_in_order() -> None:
    m = parse_manifest(NAME, doc("x", {"URI": "../y"}, {"URI": "100307/z", "Checksum": 1},
                                 {"URI": "100307/ok", "Checksum": MD5_A}))
    assert uris(m) == ["100307/ok"]
    assert [p.split(":")[0].split(" ")[1] for p in m.problems] == ["#0", "#1", "#2"]


# --- unusable files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (doc({"URI": "100307/a.txt", "Checksum": MD5_A})[:-7], "invalid JSON"),  # truncated
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'"just a string"', "top-level JSON is str"),
        (b"42", "top-level JSON is int"),
        (b"null", "top-level JSON is NoneType"),
        (b'{"DownloadManifest": "x"}', "DownloadManifest is str"),
        (b'{"DownloadManifest": {}}', "no DownloadManifest.Includes"),
        (b'{"Other": 1}', "no DownloadManifest.Includes"),
        (b'{"DownloadManifest": {"Includes": {"URI": "100307/a"}}}', "Includes is dict"),
        (b'{"DownloadManifest": {"Includes": null}}', "Includes is NoneType"),
        (b'{"DownloadManifest": {"Includes": "100307/a"}}', "Includes is str"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
def test_unusable_manifest_raises_one_line_error(data: bytes, fragment: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(NAME, data)
    msg = str(info.value)
    assert NAME in msg and fragment in msg and "\n" not in msg
    assert isinstance(info.value, HcpsyncError)


def test_parse_manifest_accepts_a_key_as_name() -> None:
    m = parse_manifest("HCP_1200/100307/.xdlm/" + NAME, doc())
    assert m.name == NAME and m.package == "3T_tfMRI_MOTOR_preproc"


# --- index -----------------------------------------------------------------------------------


def _m(name: str, *entries: tuple[str, str | None]) -> Manifest:
    return parse_manifest(name, doc(*({"URI": u, "Checksum": c} for u, c in entries)))


@pytest.fixture
def index() -> ManifestIndex:
    return ManifestIndex([
        _m("100307_3T_tfMRI_MOTOR_preproc.json",
           ("100307/MNINonLinear/Results/tfMRI_MOTOR_LR/x.dtseries.nii", MD5_A),
           ("100307/T1w/T1w_acpc_dc_restore_brain.nii.gz", MD5_B)),
        _m("100307_3T_Structural_preproc.json",
           ("100307/T1w/T1w_acpc_dc_restore_brain.nii.gz", MD5_B),  # shared, agreeing
           ("100307/T1w/T1w_acpc_dc.nii.gz", MD5_C),
           ("100307/T1w/conflict.nii.gz", MD5_A)),
        _m("100408_3T_tfMRI_MOTOR_preproc.json",
           ("100408/MNINonLinear/Results/tfMRI_MOTOR_LR/x.dtseries.nii", MD5_C),
           ("100408/unverified.txt", None)),
        _m("100307_3T_rfMRI_REST1_preproc.json",
           ("100307/T1w/conflict.nii.gz", MD5_B)),  # disagrees with Structural_preproc
        parse_manifest("100307_3T_tfMRI_MOTOR_unproc.json", doc("junk", {"URI": "../escape"})),
    ])


def test_index_lookup(index: ManifestIndex) -> None:
    assert index.lookup("100307/MNINonLinear/Results/tfMRI_MOTOR_LR/x.dtseries.nii") == MD5_A
    assert index.lookup("100408/MNINonLinear/Results/tfMRI_MOTOR_LR/x.dtseries.nii") == MD5_C
    assert index.lookup("100307/T1w/T1w_acpc_dc_restore_brain.nii.gz") == MD5_B
    assert index.lookup("100307/T1w/T1w_acpc_dc.nii.gz") == MD5_C
    assert index.lookup("100408/unverified.txt") is None
    assert "100408/unverified.txt" in index
    assert index.lookup("100307/not/listed") is None
    assert "100307/not/listed" not in index
    assert index.lookup("100307/T1w/conflict.nii.gz") is None  # conflicting manifests: not trusted
    assert len(index) == 6


def test_index_problems_aggregated_with_manifest_names(index: ManifestIndex) -> None:
    by_name: dict[str, list[str]] = {}
    for name, msg in index.problems:
        by_name.setdefault(name, []).append(msg)
    assert sorted(by_name) == ["100307_3T_rfMRI_REST1_preproc.json", "100307_3T_tfMRI_MOTOR_unproc.json"]
    assert len(by_name["100307_3T_tfMRI_MOTOR_unproc.json"]) == 2
    (conflict,) = by_name["100307_3T_rfMRI_REST1_preproc.json"]
    assert "100307/T1w/conflict.nii.gz" in conflict and "100307_3T_Structural_preproc.json" in conflict


def test_index_packages(index: ManifestIndex) -> None:
    pk = index.packages()
    assert list(pk) == sorted(pk)
    assert set(pk) == {"3T_Structural_preproc", "3T_rfMRI_REST1_preproc", "3T_tfMRI_MOTOR_preproc",
                       "3T_tfMRI_MOTOR_unproc"}
    # the same package across two subjects is one package
    assert sorted(e.uri for e in pk["3T_tfMRI_MOTOR_preproc"]) == [
        "100307/MNINonLinear/Results/tfMRI_MOTOR_LR/x.dtseries.nii",
        "100307/T1w/T1w_acpc_dc_restore_brain.nii.gz",
        "100408/MNINonLinear/Results/tfMRI_MOTOR_LR/x.dtseries.nii",
        "100408/unverified.txt",
    ]
    assert pk["3T_tfMRI_MOTOR_unproc"] == []
    pk["3T_Structural_preproc"].clear()  # a copy: the index is not changed
    assert len(index.packages()["3T_Structural_preproc"]) == 3


def test_uris_for_packages(index: ManifestIndex) -> None:
    assert index.uris_for_packages([]) == set()
    assert index.uris_for_packages(["3T_Structural_preproc", "3T_rfMRI_REST1_preproc"]) == {
        "100307/T1w/T1w_acpc_dc_restore_brain.nii.gz",
        "100307/T1w/T1w_acpc_dc.nii.gz",
        "100307/T1w/conflict.nii.gz",
    }
    both = index.uris_for_packages(["3T_tfMRI_MOTOR_preproc", "3T_Structural_preproc", "3T_tfMRI_MOTOR_preproc"])
    assert len(both) == 6


def test_unknown_package_names_it_and_lists_the_available(index: ManifestIndex) -> None:
    with pytest.raises(SelectionError) as info:
        index.uris_for_packages(["3T_tfMRI_MOTOR_preproc", "3T_tfMRI_MOTR_preproc"])
    msg = str(info.value)
    assert "'3T_tfMRI_MOTR_preproc'" in msg
    for name in ("3T_Structural_preproc", "3T_rfMRI_REST1_preproc", "3T_tfMRI_MOTOR_preproc"):
        assert name in msg
    assert "\n" not in msg and info.value.exit_code == 2


def test_unknown_package_without_any_manifest() -> None:
    with pytest.raises(SelectionError, match=r"no \.xdlm manifests"):
        ManifestIndex([]).uris_for_packages(["3T_Structural_preproc"])
