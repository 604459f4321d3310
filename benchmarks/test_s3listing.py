"""Checks of the listing service's S3 semantics against a brute-force model (no nginx needed).

Not part of the project's test suite (pytest's testpaths is ``tests``); run it with
``pytest benchmarks/test_s3listing.py``.
"""

from __future__ import annotations

import os
import random
import xml.etree.ElementTree as ET
from urllib.parse import unquote_plus, urlencode

import pytest

from benchmarks.s3listing import Service, nginx_etag
from benchmarks.workloads import split_valid_keys

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
KEYS = [
    "HCP_1200/100206/.xdlm/a.json",
    "HCP_1200/100206/MNINonLinear/aparc+aseg.nii.gz",
    "HCP_1200/100206/MNINonLinear/Results/r1/x.nii",
    "HCP_1200/100206/MNINonLinear/Results/r1/y.nii",
    "HCP_1200/100206/MNINonLinear/Results/r2/x.nii",
    "HCP_1200/100206/MNINonLinear/b.txt",
    "HCP_1200/100206/T1w/T1w.nii.gz",
    "HCP_1200/100206/release-notes/n.txt",
    "HCP_1200/100206/unprocessed/3T/a b.nii.gz",
    "HCP_1200/100307/x.txt",
    "top.txt",
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Service:
    root = tmp_path_factory.mktemp("origin")
    for i, key in enumerate(KEYS):
        path = root / "bucket" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * i)
        os.utime(path, (1_577_836_801, 1_577_836_801))
    return Service(root)


def brute(prefix: str, delimiter: str, after: str = "") -> tuple[list[str], list[str]]:
    keys: list[str] = []
    prefixes: list[str] = []
    for k in sorted(KEYS):
        if not k.startswith(prefix) or (after and k <= after):
            continue
        rest = k[len(prefix) :]
        if delimiter and delimiter in rest:
            cp = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if cp not in prefixes:
                prefixes.append(cp)
        else:
            keys.append(k)
    return keys, prefixes


def list_all(
    svc: Service, prefix: str, delimiter: str, max_keys: int, enc: bool, v1: bool = False, after: str = ""
) -> tuple[list[str], list[str]]:
    keys: list[str] = []
    prefixes: list[str] = []
    token: str | None = None
    for _page in range(100):
        q = {"prefix": prefix, "max-keys": str(max_keys)}
        if not v1:
            q["list-type"] = "2"
        if delimiter:
            q["delimiter"] = delimiter
        if enc:
            q["encoding-type"] = "url"
        if after:
            q["start-after"] = after
        if token:
            q["marker" if v1 else "continuation-token"] = token
        status, _, body = svc.handle("GET", "/bucket?" + urlencode(q))
        assert status == 200
        root = ET.fromstring(body)
        ks = [e.findtext(NS + "Key") or "" for e in root.iter(NS + "Contents")]
        ps = [e.findtext(NS + "Prefix") or "" for e in root.iter(NS + "CommonPrefixes")]
        if enc:
            ks, ps = [unquote_plus(k) for k in ks], [unquote_plus(p) for p in ps]
        assert len(ks) + len(ps) <= max_keys
        if not v1:
            assert int(root.findtext(NS + "KeyCount") or -1) == len(ks) + len(ps)
        keys += ks
        prefixes += ps
        if root.findtext(NS + "IsTruncated") != "true":
            return keys, prefixes
        token = root.findtext(NS + ("NextMarker" if v1 and delimiter else "NextContinuationToken"))
        if v1 and not delimiter:
            token = ks[-1]
        elif v1 and enc and token:
            token = unquote_plus(token)  # NextMarker is url-encoded too
        assert token
    raise AssertionError("listing did not end")


CASES = [
    ("", "", 1000),
    ("HCP_1200/100206/", "", 2),
    ("HCP_1200/100206/", "/", 1),
    ("HCP_1200/100206/MNINonLinear/", "/", 2),
    ("HCP_1200/100206/MNI", "/", 1),
    ("HCP_1200/", "/", 1000),
    ("", ".", 3),
    ("nope/", "", 1000),
]


@pytest.mark.parametrize(("prefix", "delimiter", "max_keys"), CASES)
@pytest.mark.parametrize("enc", [False, True])
@pytest.mark.parametrize("v1", [False, True])
def test_listing_matches_model(
    service: Service, prefix: str, delimiter: str, max_keys: int, enc: bool, v1: bool
) -> None:
    assert list_all(service, prefix, delimiter, max_keys, enc, v1) == brute(prefix, delimiter)


def test_random_pages(service: Service) -> None:
    rng = random.Random(7)
    for _ in range(200):
        key = rng.choice(KEYS)
        prefix = key[: rng.randrange(len(key))]
        delimiter = rng.choice(["", "/", "."])
        after = rng.choice(["", rng.choice(KEYS)])
        got = list_all(
            service, prefix, delimiter, rng.choice([1, 2, 3, 1000]), rng.random() < 0.5, after=after
        )
        assert got == brute(prefix, delimiter, after)


def test_etag_size_and_encoding(service: Service) -> None:
    _, _, body = service.handle(
        "GET", "/bucket?list-type=2&prefix=HCP_1200/100206/unprocessed/&encoding-type=url"
    )
    root = ET.fromstring(body)
    c = next(root.iter(NS + "Contents"))
    i = KEYS.index("HCP_1200/100206/unprocessed/3T/a b.nii.gz")
    assert c.findtext(NS + "Key") == "HCP_1200/100206/unprocessed/3T/a%20b.nii.gz"
    assert c.findtext(NS + "Size") == str(i)
    assert c.findtext(NS + "ETag") == nginx_etag(1_577_836_801, i)
    assert root.findtext(NS + "EncodingType") == "url"


def test_bucket_level_requests(service: Service) -> None:
    assert service.handle("HEAD", "/bucket")[0] == 200
    assert b"LocationConstraint" in service.handle("GET", "/bucket?location")[2]
    assert b"<Name>bucket</Name>" in service.handle("GET", "/")[2]
    with pytest.raises(Exception, match="bucket does not exist"):
        service.handle("HEAD", "/nobucket")
    with pytest.raises(Exception, match="continuation token"):
        service.handle("GET", "/bucket?list-type=2&continuation-token=%%%")
    with pytest.raises(Exception, match="not implemented"):
        service.handle("GET", "/bucket?acl")


def test_split_valid_keys() -> None:
    valid, skipped = split_valid_keys(["a/b", "a/b/c", "x/", "a//b", "q", "q", "r/s"])
    assert valid == ["a/b/c", "q", "r/s"]
    assert {s["key"] for s in skipped} == {"a/b", "x/", "a//b", "q"}


def test_nul_keys_are_skipped() -> None:
    valid, skipped = split_valid_keys(["ok\0no", "fine"])
    assert valid == ["fine"]
    assert skipped[0]["key"] == "ok\0no"
