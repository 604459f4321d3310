"""Checks of the generated release service (:mod:`benchmarks.synthrelease`) against a brute-force
model: every key of a small release materialised and sorted, listings computed by filtering it.

Not part of the project's test suite (pytest's testpaths is ``tests``); run it with
``pytest benchmarks/test_synthrelease.py`` (a few seconds).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from urllib.parse import unquote, urlencode

import pytest

from benchmarks.synthrelease import (
    TEMPLATE_SUBJECT,
    Release,
    Service,
    default_template,
    make_server,
)

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
PER = 12_863
CUT = 777  # keys of the last (third) subject
BUCKET = "hcp-openaccess"

# a template whose order changes with the subject ID ('<ID>a' against a literal '200001b'),
# with characters S3 clients must url-encode, and non-ASCII keys (code point order = UTF-8 order)
TRICKY = [
    "100206/a",
    "100206/1_a",
    "100206/100206b",
    "100206/2_y",
    "100206/100206a",
    "100206/200001c",
    "100206/T1w/100206/x+y z.nii",
    "100206/T1w/100206/&amp;<>.txt",
    "100206/T1w/Native/a%2Fb",
    "100206/T1w/Native/é.txt",
    "100206/T1w/Native/\U0001f600.txt",
    "100206/T1w/Native/\ufffd.txt",
    "100206/T1w/Native/\u4e2d.txt",
    "100206/.xdlm/100206_3T_x.json",
    "100206/MNINonLinear/Results/r1/100206_r1.nii",
    "100206/MNINonLinear/Results/r2/x.nii",
    "100206/MNINonLinear/b.txt",
    "100206/MNINonLinear.txt",
]


def model_keys(rests: Sequence[str], subjects: int, last: int, release: str = "HCP_1200/") -> list[str]:
    """Every key of the release, sorted as a whole (independent of the service's per-subject walk)."""
    out: list[str] = []
    for i in range(subjects):
        sid = str(200000 + i)
        ks = sorted(release + r.replace(TEMPLATE_SUBJECT, sid) for r in rests)
        out += ks[:last] if i == subjects - 1 else ks
    return sorted(out)


def model_pages(keys: list[str], prefix: str, delimiter: str, after: str, max_keys: int) -> list[tuple[list[str], list[str]]]:
    """The pages S3 gives: keys > ``after`` under ``prefix``, rolled up at ``delimiter``, in order."""
    entries: dict[str, bool] = {}  # entry -> is a common prefix
    for k in keys:
        if not k.startswith(prefix) or (after and k <= after):
            continue
        d = k.find(delimiter, len(prefix)) if delimiter else -1
        if d >= 0:
            entries[k[: d + len(delimiter)]] = True
        else:
            entries[k] = False
    ordered = sorted(entries)
    if max_keys == 0:
        return [([], [])]
    pages = [ordered[i : i + max_keys] for i in range(0, len(ordered), max_keys)] or [[]]
    return [([e for e in p if not entries[e]], [e for e in p if entries[e]]) for p in pages]


def walk(svc: Service, prefix: str, delimiter: str, after: str, max_keys: int, enc: bool) -> list[tuple[list[str], list[str]]]:
    """Every page of a ListObjectsV2 walk, following continuation tokens."""
    pages: list[tuple[list[str], list[str]]] = []
    token: str | None = None
    for _ in range(100_000):
        q = {"list-type": "2", "prefix": prefix, "max-keys": str(max_keys)}
        if delimiter:
            q["delimiter"] = delimiter
        if after:
            q["start-after"] = after
        if enc:
            q["encoding-type"] = "url"
        if token:
            q["continuation-token"] = token
        status, _, body = svc.handle("GET", f"/{BUCKET}?" + urlencode(q))
        assert status == 200
        root = ET.fromstring(body)
        ks = [e.findtext(NS + "Key") or "" for e in root.iter(NS + "Contents")]
        ps = [e.findtext(NS + "Prefix") or "" for e in root.iter(NS + "CommonPrefixes")]
        if enc:
            ks, ps = [unquote(k) for k in ks], [unquote(p) for p in ps]
            assert unquote(root.findtext(NS + "Prefix") or "") == prefix
        assert int(root.findtext(NS + "KeyCount") or -1) == len(ks) + len(ps)
        pages.append((ks, ps))
        if root.findtext(NS + "IsTruncated") != "true":
            assert root.find(NS + "NextContinuationToken") is None
            return pages
        token = root.findtext(NS + "NextContinuationToken")
        assert token
    raise AssertionError("the listing did not end")


@pytest.fixture(scope="module")
def template() -> list[str]:
    rests = default_template()
    assert len(rests) == PER
    return rests


@pytest.fixture(scope="module")
def real(template: list[str]) -> tuple[Service, list[str]]:
    rel = Release(template, objects=2 * PER + CUT)
    return Service(rel), model_keys(template, 3, CUT)


def test_layout(template: list[str]) -> None:
    rel = Release(template, objects=2 * PER + CUT)
    assert (rel.subjects, rel.last_count, rel.total) == (3, CUT, 2 * PER + CUT)
    assert list(rel.iter_keys()) == model_keys(template, 3, CUT)
    assert Release(template, objects=2 * PER).subjects == 2
    assert Release(template, objects=2 * PER).last_count == PER
    assert Release(template, subjects=4).total == 4 * PER
    keys = list(Release(template, subjects=1).iter_keys())
    assert all(k.startswith("HCP_1200/200000/") and TEMPLATE_SUBJECT not in k for k in keys)
    assert "HCP_1200/200000/T1w/200000/label/BA.ctab" in keys
    with pytest.raises(ValueError, match="subjects or objects"):
        Release(template)


REAL_CASES = [
    # prefix, delimiter, start-after, max-keys
    ("", "", "", 1000),
    ("HCP_1200/", "/", "", 1000),
    ("HCP_1200/", "/", "", 1),
    ("", "/", "", 1000),
    ("HCP_1200/2000", "", "", 1000),
    ("HCP_1200/2000", "/", "", 2),
    ("HCP_1200/200001/", "", "", 1000),
    ("HCP_1200/200001/", "/", "", 3),
    ("HCP_1200/200001/MNINonLinear/", "/", "", 1000),
    ("HCP_1200/200001/MNINonLinear/Results/", "/", "", 7),
    ("HCP_1200/200001/T1w/200001/", "", "", 250),
    ("HCP_1200/200002/", "", "", 1000),  # the cut subject
    ("HCP_1200/200002/T1w/", "", "", 1000),  # cut away: empty
    ("HCP_1200/200003/", "", "", 1000),  # no such subject
    ("HCP_1200/19", "", "", 1000),
    ("HCP_1200/200000/.xdlm/", "", "", 10),
    ("", "", "HCP_1200/200000/T1w/200000/label/BA.ctab", 1000),  # start-after an existing key
    ("", "", "HCP_1200/200000/zzz", 1000),  # start-after between subjects
    ("HCP_1200/", "/", "HCP_1200/200001/", 1000),  # start-after a common prefix itself
    ("HCP_1200/200001/", "/", "HCP_1200/200001/MNINonLinear/Results/x", 1000),
    ("", "", "HCP_1200/200002/zzz", 1000),  # after the last key
    ("HCP_1200/", "", "", 0),
    ("HCP_1200/200000/MNINonLinear/Results/", "_", "", 1000),
]


# every case plain and url-encoded, but the walks of every key (no prefix, no delimiter) only once
REAL_CASES_ENC = [(*c, enc) for c in REAL_CASES for enc in (False, True) if not (enc and not c[0] and not c[1])]


@pytest.mark.parametrize(("prefix", "delimiter", "after", "max_keys", "enc"), REAL_CASES_ENC)
def test_listing_matches_model(
    real: tuple[Service, list[str]], prefix: str, delimiter: str, after: str, max_keys: int, enc: bool
) -> None:
    svc, keys = real
    assert walk(svc, prefix, delimiter, after, max_keys, enc) == model_pages(keys, prefix, delimiter, after, max_keys)


def tricky_candidates(keys: list[str], rng: random.Random) -> Iterator[tuple[str, str, str, int]]:
    cuts = [k[: rng.randrange(len(k) + 1)] for k in keys]
    for _ in range(400):
        prefix = rng.choice([*cuts, "", "HCP_1200/", "HCP_1200/2", "HCP_1200/200001/T1w/"])
        after = rng.choice(["", "", rng.choice(keys), rng.choice(cuts)])
        yield prefix, rng.choice(["", "/", "/", "_", "0/", "é"]), after, rng.choice([1, 2, 3, 5, 1000])


@pytest.mark.parametrize("cache", [1, 4096])
def test_tricky_template_random(cache: int) -> None:
    """Subjects whose keys sort differently, a cut last subject, odd characters; the LRU of one
    subject (cache=1) re-sorts subjects as the walk moves between them."""
    rel = Release(TRICKY, objects=4 * len(TRICKY) - 6, cache_subjects=cache)
    keys = model_keys(TRICKY, 4, len(TRICKY) - 6)
    assert list(rel.iter_keys()) == keys
    orders = {tuple(k.split("/", 2)[2].replace(str(200000 + i), "ID") for k in list(rel.keys(i))[:5]) for i in range(3)}
    assert len(orders) > 1, "the template must sort differently per subject"
    svc = Service(rel)
    for prefix, delimiter, after, max_keys in tricky_candidates(keys, random.Random(13)):
        enc = random.Random(prefix).random() < 0.5
        assert walk(svc, prefix, delimiter, after, max_keys, enc) == model_pages(keys, prefix, delimiter, after, max_keys), \
            (prefix, delimiter, after, max_keys)
    assert len(rel._cache) <= cache


def test_bad_requests(real: tuple[Service, list[str]]) -> None:
    svc, _ = real
    with pytest.raises(Exception, match="continuation token"):
        svc.handle("GET", f"/{BUCKET}?list-type=2&continuation-token=%%%")
    with pytest.raises(Exception, match="bucket does not exist"):
        svc.handle("GET", "/other?list-type=2")
    with pytest.raises(Exception, match="max-keys"):
        svc.handle("GET", f"/{BUCKET}?list-type=2&max-keys=-1")
    body = svc.handle("GET", f"/{BUCKET}?list-type=2&max-keys=5000")[2]
    assert b"<MaxKeys>1000</MaxKeys>" in body and body.count(b"<Contents>") == 1000
    assert svc.handle("HEAD", f"/{BUCKET}")[0] == 200
    assert b"LocationConstraint" in svc.handle("GET", f"/{BUCKET}?location")[2]
    assert f"<Name>{BUCKET}</Name>".encode() in svc.handle("GET", "/")[2]


# ------------------------------------------------------------------------------ over HTTP


class Running:
    """The service over HTTP in a thread of the test."""

    def __init__(self, rel: Release, page_delay: float = 0.0, get_delay: float = 0.0) -> None:
        self.service = Service(rel, page_delay, get_delay)
        self.server = make_server(self.service)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def stats(self) -> dict[str, object]:
        return dict(json.loads(self.request("GET", "/__stats")[2]))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def tiny(template: list[str]) -> Iterator[Running]:
    run = Running(Release(template, objects=2 * PER + CUT, sizes="tiny"))
    yield run
    run.close()


def test_objects_content_etag_range(tiny: Running) -> None:
    key = "HCP_1200/200001/T1w/200001/label/BA.ctab"
    status, headers, body = tiny.request("GET", f"/{BUCKET}/{key}")
    assert status == 200 and 1 <= len(body) <= 64
    assert body == hashlib.blake2b(key.encode(), digest_size=32).digest()[: len(body)] or len(body) > 32
    etag = f'"{hashlib.md5(body).hexdigest()}"'
    assert headers["etag"] == etag and headers["content-length"] == str(len(body))
    assert headers["last-modified"] == "Wed, 01 Jan 2020 00:00:01 GMT"
    listing = tiny.request("GET", f"/{BUCKET}?list-type=2&prefix={key}")[2]
    assert f"<ETag>{etag.replace(chr(34), '&quot;')}</ETag><Size>{len(body)}</Size>".encode() in listing
    assert tiny.request("GET", f"/{BUCKET}/{key}")[2] == body  # deterministic
    head = tiny.request("HEAD", f"/{BUCKET}/{key}")
    assert head[0] == 200 and head[1]["content-length"] == str(len(body)) and head[2] == b""
    if len(body) > 1:
        st, hd, part = tiny.request("GET", f"/{BUCKET}/{key}", {"Range": "bytes=1-"})
        assert (st, part, hd["content-range"]) == (206, body[1:], f"bytes 1-{len(body) - 1}/{len(body)}")
        st, _, part = tiny.request("GET", f"/{BUCKET}/{key}", {"Range": "bytes=-1"})
        assert (st, part) == (206, body[-1:])
    assert tiny.request("GET", f"/{BUCKET}/{key}", {"Range": "bytes=999-"})[0] == 416
    assert tiny.request("GET", f"/{BUCKET}/{key}", {"If-Match": etag})[0] == 200
    assert tiny.request("GET", f"/{BUCKET}/{key}", {"If-Match": '"0123"'})[0] == 412
    cut_away = "HCP_1200/200002/T1w/200002/label/BA.ctab"  # beyond the cut of the last subject
    assert tiny.request("GET", f"/{BUCKET}/{cut_away}")[0] == 404
    assert tiny.request("GET", f"/{BUCKET}/HCP_1200/200003/T1w/200003/label/BA.ctab")[0] == 404
    assert tiny.request("GET", f"/{BUCKET}/HCP_1200/200001/T1w/200001/label/BA.ctab.nope")[0] == 404


def test_zero_sizes(template: list[str]) -> None:
    run = Running(Release(template, subjects=1))
    try:
        status, headers, body = run.request("GET", f"/{BUCKET}/HCP_1200/200000/T1w/200000/label/BA.ctab")
        assert (status, body, headers["etag"]) == (200, b"", '"d41d8cd98f00b204e9800998ecf8427e"')
        listing = run.request("GET", f"/{BUCKET}?list-type=2&prefix=HCP_1200/200000/T1w/")[2]
        assert listing.count(b"<Size>0</Size>") == listing.count(b"<Contents>") > 0
    finally:
        run.close()


def test_stats_and_reset(tiny: Running) -> None:
    t0 = time.time()
    tiny.request("POST", "/__reset")
    s = tiny.stats()
    assert (s["list"], s["get"], s["first_get"], s["first_get_manifest"], s["first_list"]) == (0, 0, None, None, None)
    tiny.request("GET", f"/{BUCKET}?list-type=2&prefix=HCP_1200/200000/")
    tiny.request("GET", f"/{BUCKET}?list-type=2&prefix=HCP_1200/200001/")
    tiny.request("GET", f"/{BUCKET}/HCP_1200/200000/T1w/200000/label/BA.ctab")
    tiny.request("GET", f"/{BUCKET}/HCP_1200/200000/.xdlm/200000_3T_Structural_preproc.json")
    tiny.request("HEAD", f"/{BUCKET}/HCP_1200/200000/T1w/200000/label/BA.ctab")
    tiny.request("HEAD", f"/{BUCKET}")
    tiny.request("GET", f"/{BUCKET}/nope")
    s = tiny.stats()
    assert (s["list"], s["get"], s["get_manifest"], s["head"], s["head_bucket"], s["errors"]) == (2, 2, 1, 1, 1, 1)
    assert isinstance(s["first_list"], float) and isinstance(s["first_get"], float)
    assert isinstance(s["first_get_manifest"], float)
    assert t0 <= s["first_list"] <= s["first_get"] <= s["first_get_manifest"] <= time.time()
    assert s["lists_in_flight_max"] == 1 and s["lists_in_flight"] == 0
    tiny.request("POST", "/__reset")
    s = tiny.stats()
    assert (s["list"], s["get"], s["head"], s["first_get"], s["lists_in_flight_max"]) == (0, 0, 0, None, 0)


def _concurrently(run: Running, paths: list[str]) -> tuple[float, list[float]]:
    """Send every request at once (one connection each); the wall time and each request's latency."""
    barrier = threading.Barrier(len(paths))
    lat = [0.0] * len(paths)

    def one(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", run.port, timeout=60)
        conn.connect()
        barrier.wait()
        t = time.monotonic()
        conn.request("GET", paths[i])
        resp = conn.getresponse()
        resp.read()
        lat[i] = time.monotonic() - t
        assert resp.status == 200
        conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0, lat


def test_concurrent_delayed_listings_overlap(template: list[str]) -> None:
    """64 listings of different subjects at once, 1 s delay each: all answered in ~1 s (not 64 s),
    each after its own delay, and the service saw 64 in flight."""
    run = Running(Release(template, subjects=70), page_delay=1.0)
    try:
        paths = [f"/{BUCKET}?list-type=2&prefix=HCP_1200/{200000 + i}/&encoding-type=url" for i in range(64)]
        wall, lat = _concurrently(run, paths)
        s = run.stats()
        assert s["list"] == 64 and s["lists_in_flight_max"] == 64
        assert min(lat) >= 1.0
        assert wall < 4.0, f"64 delayed listings took {wall:.1f} s: they did not overlap"
    finally:
        run.close()


def test_get_delay(template: list[str]) -> None:
    run = Running(Release(template, subjects=1, sizes="tiny"), get_delay=0.5)
    try:
        t = time.monotonic()
        run.request("GET", f"/{BUCKET}?list-type=2&max-keys=1")
        assert time.monotonic() - t < 0.5
        wall, lat = _concurrently(run, [f"/{BUCKET}/HCP_1200/200000/T1w/200000/label/BA.ctab"] * 8)
        assert min(lat) >= 0.5 and wall < 2.0
        assert run.stats()["gets_in_flight_max"] == 8
    finally:
        run.close()


def test_template_collision_is_refused() -> None:
    rel = Release(["100206/100206x", "100206/200001x"], subjects=3)
    assert len(list(rel.keys(0))) == 2
    with pytest.raises(ValueError, match="same key for subject 200001"):
        rel.keys(1)
