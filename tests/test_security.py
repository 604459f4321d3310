"""Hostile buckets and destinations let nothing out; credentials never show up anywhere.

A listing can hold any key S3 accepts: ``..`` segments, ``//``, backslashes, control characters,
a key that is also another key's folder.  The destination can hold symlinks planted to lead a
write elsewhere.  Nothing may be written outside DEST, every refused key is reported, the rest lands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from faultproxy import FaultProxy, Rule

from hcpsync import Selection, StorageOptions, TransferConfig, plan, pull
from hcpsync.errors import AccessDeniedError, CredentialsError, EndpointError, HcpsyncError

SUBJ = "HCP_1200/100307/"


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[str, bytes | str]]:
    """Every entry under ``root`` (not following symlinks): kind and content or link target."""
    out: dict[str, tuple[str, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if skip is not None and (here == skip or skip in here.parents):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = here / name
            if skip is not None and p == skip:
                continue
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", "")
            else:
                out[rel] = ("file", p.read_bytes())
    return out


# --------------------------------------------------------------------------- hostile listings

HOSTILE = {
    f"{SUBJ}../../escape1.txt": "'..' path segment",
    f"{SUBJ}T1w/../../../../escape2.txt": "'..' path segment",
    f"{SUBJ}/etc/escape3": "empty path segment",  # HCP_1200/100307//etc/x: "absolute" after the subject
    f"{SUBJ}T1w//double": "empty path segment",
    f"{SUBJ}./dot": "'.' path segment",
    f"{SUBJ}T1w\\..\\..\\escape4": "backslash",
    f"{SUBJ}nul\x00byte": "control characters",
    f"{SUBJ}bell\x07": "control characters",
    f"{SUBJ}new\nline": "control characters",
    f"{SUBJ}del\x7f": "control characters",
    f"{SUBJ}T1w/trailing/": "empty path segment",  # not an empty folder marker: it has bytes
    f"{SUBJ}T1w/sneaky.nii.gz.hcpsync-part": "temporary suffix",
    f"{SUBJ}{'x' * 256}": "longer than 255 bytes",
    f"{SUBJ}dir/file": "both a file and a folder",  # also the folder of dir/file/x
}


def hostile_tree() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(good objects, hostile objects)."""
    good = {
        f"{SUBJ}T1w/T1w_acpc_dc.nii.gz": det_bytes(30_000, "t1"),
        f"{SUBJ}T1w/xfms/acpc.mat": b"1 0 0\n",
        f"{SUBJ}dir/file/x": b"the file that makes dir/file a folder",
        f"{SUBJ}MNINonLinear/brain.nii.gz": det_bytes(5_000, "brain"),
        f"{SUBJ}unicode/caf\u00e9 \u2603.txt": b"non-ASCII names are fine",
        f"{SUBJ}T1w/empty-folder/": b"",  # an S3 console folder marker: skipped, not refused
    }
    bad = {k: f"evil {i}".encode() for i, k in enumerate(HOSTILE)}
    return good, bad


async def test_hostile_keys_are_refused_and_reported_the_rest_lands(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    good, bad = hostile_tree()
    fast_put(bucket, {**good, **bad})  # straight into the backend: S3 accepts such keys, moto's PUT may not
    dest = tmp_path / "dest"
    before = snapshot(tmp_path)
    sel = Selection(subjects=("100307",), bucket=bucket)

    the_plan = await plan(sel, endpoint_url=moto_url)
    rejected = {r.key: r.reason for r in the_plan.rejected}
    assert set(rejected) == set(HOSTILE), set(rejected) ^ set(HOSTILE)
    for key, why in HOSTILE.items():
        assert why in rejected[key], (key, rejected[key])
    assert all("\n" not in r for r in rejected.values())

    report = await pull(sel, dest, endpoint_url=moto_url)
    assert not report.ok
    assert {f.key for f in report.failed} == set(HOSTILE)
    want = {k[len("HCP_1200/"):]: v for k, v in good.items() if not k.endswith("/")}
    assert tree_files(dest) == want
    assert report.transferred_files == len(want)
    # nothing appeared or changed anywhere outside DEST
    assert snapshot(tmp_path, skip=dest) == before

    # the JSON report names every refused key (control characters escaped, one line each)
    doc = json.loads(json.dumps(report.to_json()))
    assert {f["key"] for f in doc["failed"]} == set(HOSTILE)


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A folder outside DEST that symlinks in DEST point to; it must never change."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "victim.txt").write_bytes(b"do not overwrite")
    yield out


async def test_symlinks_in_dest_leading_outside_are_not_followed(
    moto_url: str, bucket: str, tmp_path: Path, outside: Path
) -> None:
    objects = {
        f"{SUBJ}T1w/T1w_acpc_dc.nii.gz": det_bytes(20_000, "t1"),  # its folder is a symlink to outside
        f"{SUBJ}T1w/xfms/acpc.mat": b"mat",  # below that symlinked folder
        f"{SUBJ}MNINonLinear/victim.txt": b"evil: through a file symlink",  # final path is a symlink
        f"{SUBJ}MNINonLinear/dangling.txt": b"evil: through a dangling symlink",
        f"{SUBJ}MNINonLinear/tmp.txt": b"a planted temp symlink is replaced, never followed",
        f"{SUBJ}MNINonLinear/inside/x.txt": b"refused: a symlinked folder inside DEST could alias another",
        f"{SUBJ}release-notes.txt": det_bytes(3_000, "notes"),
    }
    fast_put(bucket, objects)
    dest = tmp_path / "dest"
    (dest / "100307/MNINonLinear").mkdir(parents=True)
    (dest / "100307/T1w").symlink_to(outside, target_is_directory=True)
    (dest / "100307/MNINonLinear/victim.txt").symlink_to(outside / "victim.txt")
    (dest / "100307/MNINonLinear/dangling.txt").symlink_to(outside / "created.txt")
    (dest / "100307/MNINonLinear/tmp.txt.hcpsync-part").symlink_to(outside / "victim.txt")
    (dest / "elsewhere").mkdir()
    (dest / "100307/MNINonLinear/inside").symlink_to(dest / "elsewhere", target_is_directory=True)
    before = snapshot(tmp_path, skip=dest)

    cfg = TransferConfig(concurrency=4)
    report = await pull(Selection(subjects=("100307",), bucket=bucket), dest, endpoint_url=moto_url, config=cfg)

    failed = {f.key: f.reason for f in report.failed}
    assert set(failed) == {
        f"{SUBJ}T1w/T1w_acpc_dc.nii.gz", f"{SUBJ}T1w/xfms/acpc.mat", f"{SUBJ}MNINonLinear/victim.txt",
        f"{SUBJ}MNINonLinear/dangling.txt", f"{SUBJ}MNINonLinear/inside/x.txt",
    }, failed
    assert "symlink" in failed[f"{SUBJ}T1w/T1w_acpc_dc.nii.gz"] and "symlink" in failed[f"{SUBJ}T1w/xfms/acpc.mat"]
    assert "symlink" in failed[f"{SUBJ}MNINonLinear/inside/x.txt"]
    assert "symlink" in failed[f"{SUBJ}MNINonLinear/victim.txt"]
    assert "symlink" in failed[f"{SUBJ}MNINonLinear/dangling.txt"]
    # the outside folder is exactly as it was: no new file, the victim intact
    assert snapshot(tmp_path, skip=dest) == before
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_bytes() == b"do not overwrite"
    # the planted links are left alone (the temp one replaced, not followed), and the safe objects landed
    assert os.readlink(dest / "100307/MNINonLinear/victim.txt") == str(outside / "victim.txt")
    assert list((dest / "elsewhere").iterdir()) == []
    assert (dest / "100307/MNINonLinear/tmp.txt").read_bytes() == objects[f"{SUBJ}MNINonLinear/tmp.txt"]
    assert (dest / "100307/release-notes.txt").read_bytes() == objects[f"{SUBJ}release-notes.txt"]
    assert report.transferred_files == 2


# --------------------------------------------------------------------------- credentials never leak

SESSION_TOKEN = "IQoJb3JpZ2luX2VjEHcaCXVzLWVhc3QtMSJHMEUCIQ" + "hcpsyncFakeSessionToken" * 4


def run_cli(args: list[str], env_over: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **FAKE_ENV, **env_over}
    env.pop("HCPSYNC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "hcpsync", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def secrets_in(text: str, secrets: list[str]) -> list[str]:
    found = []
    for s in secrets:
        # the whole secret, or any long piece of it
        pieces = {s} | {s[i:i + 12] for i in range(0, max(1, len(s) - 12), 4)}
        if any(p in text for p in pieces):
            found.append(s[:4] + "...")
    return found


@pytest.fixture
def moto_auth(moto_url: str) -> Iterator[dict[str, str]]:
    """Turn on moto's request authentication (signature, key, token); yield a known IAM user's keys.

    (moto checks the signature of GETs, but wrongly refuses that of listings with a prefix, and it
    does not evaluate bucket policies: an AccessDenied comes from the proxy's ``denied`` rule.)
    """
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    iam = boto3.client("iam", endpoint_url=moto_url, region_name="us-east-1")
    name = f"reader-{os.getpid()}-{id(iam)}"
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    old_count, old_requests = settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = old_count
        ActionAuthenticatorMixin.request_count = old_requests


@pytest.fixture
def denying_proxy(moto_url: str) -> Iterator[FaultProxy]:
    """S3 answering 403 AccessDenied to every request, as a bucket policy's Deny does."""
    with FaultProxy(moto_url) as proxy:
        proxy.add_rule(Rule("denied", kinds=("list", "get", "head")))
        yield proxy


def test_credentials_never_appear_in_output(
    moto_url: str, bucket: str, tmp_path: Path, moto_auth: dict[str, str], denying_proxy: FaultProxy
) -> None:
    fast_put(bucket, {f"{SUBJ}T1w/a.nii.gz": b"a" * 100})
    fake = {**FAKE_ENV, "AWS_SESSION_TOKEN": SESSION_TOKEN}
    wrong_secret = {**moto_auth, "AWS_SECRET_ACCESS_KEY": FAKE_ENV["AWS_SECRET_ACCESS_KEY"]}
    bad_token = {**moto_auth, "AWS_SESSION_TOKEN": SESSION_TOKEN}
    secrets = [fake["AWS_ACCESS_KEY_ID"], fake["AWS_SECRET_ACCESS_KEY"], SESSION_TOKEN,
               moto_auth["AWS_ACCESS_KEY_ID"], moto_auth["AWS_SECRET_ACCESS_KEY"]]
    sel = ["--bucket", bucket, "--subject", "100307"]
    base = [*sel, "--endpoint-url", moto_url]
    denied = [*sel, "--endpoint-url", denying_proxy.url]
    runs = {
        # AccessDenied (a bucket policy's Deny), with temporary credentials
        "denied-pull": (["pull", *denied, "--dest", str(tmp_path / "d1"), "--json"], fake),
        "denied-plan": (["plan", *denied, "--json"], fake),
        # a key S3 knows, with the wrong secret; a session token S3 refuses (expired, say); a key S3 does not know
        "wrong-secret": (["pull", *base, "--dest", str(tmp_path / "d2"), "--json"], wrong_secret),
        "bad-token": (["pull", *base, "--dest", str(tmp_path / "d3")], bad_token),
        "unknown-key": (["plan", *base], fake),
        # an endpoint refusing connections
        "bad-endpoint": (["pull", *sel, "--dest", str(tmp_path / "d4"), "--endpoint-url", "http://127.0.0.1:9",
                          "--retries", "1"], fake),
    }
    with ThreadPoolExecutor(4) as pool:
        futures = {name: pool.submit(run_cli, args, env) for name, (args, env) in runs.items()}
        results = {name: f.result() for name, f in futures.items()}
    for name, r in results.items():
        assert r.returncode == 2, (name, r.returncode, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, (name, r.stderr)
        assert r.stdout == "", (name, r.stdout)
        assert secrets_in(r.stdout + r.stderr, secrets) == [], (name, r.stdout, r.stderr)
    for name in ("denied-pull", "denied-plan", "wrong-secret", "bad-token", "unknown-key"):  # the way out, each time
        assert "BALSA" in results[name].stderr and "--profile hcp" in results[name].stderr, name
    assert "access denied" in results["denied-pull"].stderr and "access denied" in results["denied-plan"].stderr
    assert "SignatureDoesNotMatch" in results["wrong-secret"].stderr
    assert "session token" in results["bad-token"].stderr
    assert "InvalidAccessKeyId" in results["unknown-key"].stderr
    assert "cannot connect" in results["bad-endpoint"].stderr
    assert denying_proxy.counts.get("list", 0) >= 2  # both denied runs did ask
    # nothing hcpsync wrote to disk holds them either (the journal included)
    written = [p for d in ("d1", "d2", "d3", "d4") for p in (tmp_path / d).rglob("*") if p.is_file()]
    for p in written:
        assert secrets_in(p.read_bytes().decode("latin-1"), secrets) == [], p


def test_credentials_never_appear_in_a_failure_report(moto_url: str, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {f"{SUBJ}T1w/a.nii.gz": b"a" * 100, f"{SUBJ}T1w/broken.nii.gz": b"b" * 100})
    fake = {**FAKE_ENV, "AWS_SESSION_TOKEN": SESSION_TOKEN}
    secrets = [fake["AWS_ACCESS_KEY_ID"], fake["AWS_SECRET_ACCESS_KEY"], SESSION_TOKEN]
    with FaultProxy(moto_url) as proxy:
        proxy.add_rule(Rule("internal", key_contains="broken"))
        for extra in (["--json"], []):
            r = run_cli(["pull", "--bucket", bucket, "--subject", "100307", "--dest", str(tmp_path / "d"),
                         "--endpoint-url", proxy.url, "--retries", "1", *extra], fake)
            assert r.returncode == 1, r.stderr
            assert "broken.nii.gz" in r.stdout and "InternalError" in r.stdout
            assert secrets_in(r.stdout + r.stderr, secrets) == [], (r.stdout, r.stderr)
        assert proxy.counts["get"] >= 2


async def test_library_errors_hold_no_credentials(
    moto_url: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_auth: dict[str, str],
    denying_proxy: FaultProxy,
) -> None:
    fast_put(bucket, {f"{SUBJ}a": b"a"})
    for k, v in {**moto_auth, "AWS_SESSION_TOKEN": SESSION_TOKEN}.items():
        monkeypatch.setenv(k, v)
    secrets = [moto_auth["AWS_ACCESS_KEY_ID"], moto_auth["AWS_SECRET_ACCESS_KEY"], SESSION_TOKEN]
    sel = Selection(subjects=("100307",), bucket=bucket)
    cfg = TransferConfig(retries=0)
    caught: list[HcpsyncError] = []
    for endpoint, kind in (
        (denying_proxy.url, AccessDeniedError),
        (moto_url, CredentialsError),  # the session token is refused
        ("http://127.0.0.1:9", EndpointError),
    ):
        with pytest.raises(kind) as exc:
            await pull(sel, tmp_path / "d", config=cfg, storage=StorageOptions(endpoint_url=endpoint))
        caught.append(exc.value)
        assert exc.value.exit_code == 2
    for err in caught:
        chain: list[Any] = []
        e: BaseException | None = err
        while e is not None:  # the error and everything it was raised from
            chain.append(e)
            e = e.__cause__ or e.__context__
        text = " ".join(f"{x!s} {x!r} {getattr(x, 'kwargs', '')} {getattr(x, 'response', '')}" for x in chain)
        assert secrets_in(text, secrets) == [], text
        assert "\n" not in str(err)


ODD_BUT_LEGAL = [
    "T1w/with space.nii.gz", "T1w/plus+equals=.txt", "T1w/tilde~(1)!.txt", "T1w/per%20cent.txt",
    "T1w/semi;colon,comma.txt", "T1w/quote'star*.txt", "T1w/caf\u00e9 \u2603.txt", "T1w/amp&dollar$at@.txt",
    "T1w/hash#question?.txt", "T1w/.hidden", "T1w/..double-dot-prefix", "T1w/brackets[1]{2}.txt",
]


class RecordingProxy(FaultProxy):
    """The fault proxy, also recording each request's raw (still percent-encoded) path."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.raw_paths: list[str] = []

    async def _handle(self, request: Any) -> Any:
        self.raw_paths.append(request.raw_path)
        return await super()._handle(request)


@pytest.fixture
def recording_proxy(moto_url: str) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(moto_url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


async def test_odd_but_legal_keys_are_fetched_byte_identical(
    recording_proxy: RecordingProxy, bucket: str, tmp_path: Path
) -> None:
    objects = {f"{SUBJ}{k}": det_bytes(100 + i, k) for i, k in enumerate(ODD_BUT_LEGAL)}
    fast_put(bucket, objects)
    report = await pull(Selection(subjects=("100307",), bucket=bucket), tmp_path, endpoint_url=recording_proxy.url)
    assert report.ok, report.failed
    assert tree_files(tmp_path) == {k[len("HCP_1200/"):]: v for k, v in objects.items()}
    assert recording_proxy.counts["get"] == len(objects)


async def test_odd_keys_go_on_the_wire_exactly_as_signed(
    recording_proxy: RecordingProxy, bucket: str, tmp_path: Path
) -> None:
    # SigV4 signs the canonical path (each byte outside A-Za-z0-9-._~/ percent-encoded); S3 checks the
    # signature against the path it receives: a client must send the very string it signed.
    # (moto cannot check this: it refuses boto3's own signatures for most of these keys.)
    objects = {f"{SUBJ}{k}": det_bytes(100 + i, k) for i, k in enumerate(ODD_BUT_LEGAL)}
    fast_put(bucket, objects)
    report = await pull(Selection(subjects=("100307",), bucket=bucket), tmp_path, endpoint_url=recording_proxy.url)
    assert report.ok, report.failed
    sent = {urllib.parse.unquote(p): p for p in recording_proxy.raw_paths if "?" not in p}
    for key in objects:
        canonical = "/" + bucket + "/" + urllib.parse.quote(key, safe="/~")
        assert sent.get(f"/{bucket}/{key}") == canonical, (key, sent.get(f"/{bucket}/{key}"), canonical)


async def test_state_folder_symlinked_outside_is_refused(
    moto_url: str, bucket: str, tmp_path: Path, outside: Path
) -> None:
    fast_put(bucket, {f"{SUBJ}a": b"a"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / ".hcpsync").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    with pytest.raises(HcpsyncError, match="symlink") as exc:
        await pull(Selection(subjects=("100307",), bucket=bucket), dest, endpoint_url=moto_url)
    assert exc.value.exit_code == 2
    assert snapshot(outside) == before  # no journal, no lock file written out there


@pytest.mark.parametrize("name", ["lock", "journal.sqlite"])
async def test_symlinks_inside_the_state_folder_are_not_followed(
    moto_url: str, bucket: str, tmp_path: Path, outside: Path, name: str
) -> None:
    fast_put(bucket, {f"{SUBJ}a": b"a"})
    dest = tmp_path / "dest"
    (dest / ".hcpsync").mkdir(parents=True)
    (dest / ".hcpsync" / name).symlink_to(outside / ("victim.txt" if name == "lock" else "new.sqlite"))
    before = snapshot(outside)
    try:
        await pull(Selection(subjects=("100307",), bucket=bucket), dest, endpoint_url=moto_url)
    except HcpsyncError as err:
        assert err.exit_code == 2 and "\n" not in str(err)
    assert snapshot(outside) == before
