"""Start-up (issue 12): what ``hcpsync --version``, ``--help``, ``import hcpsync`` and a pull load;
no TLS context for a plain-HTTP endpoint; no botocore client built; the listings and HEADs that
replace it (:mod:`hcpsync.store.s3_api`) answer and fail as the client did."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import fast_put

from hcpsync.config import TransferConfig
from hcpsync.errors import (
    AccessDeniedError,
    BadResponseError,
    CredentialsError,
    NoSuchBucketError,
    NoSuchKeyError,
    NotS3Error,
    RedirectError,
    ThrottledError,
    UsageError,
)
from hcpsync.models import ObjectInfo
from hcpsync.store.s3 import S3Storage, StorageOptions
from hcpsync.store.s3_api import parse_listing
from hcpsync.store.s3_http import tls_context

HEAVY = ("aiohttp", "aiobotocore", "botocore", "sqlite3", "ssl", "tqdm", "yarl")
SUBJ = "HCP_1200/100307/"


def loaded_after(code: str, heavy: tuple[str, ...] = HEAVY) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; which ``heavy`` modules it left loaded, and what it printed."""
    script = (f"import sys, json\n{code}\n"
              f"print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"modules": json.loads(proc.stderr.strip().splitlines()[-1]), "stdout": proc.stdout}


def test_version_loads_no_network_stack_nor_the_commands() -> None:
    run = loaded_after("from hcpsync.cli.main import main\nassert main(['--version']) == 0\n"
                       "assert 'hcpsync.api' not in sys.modules and 'argparse' not in sys.modules")
    assert run["stdout"].startswith("hcpsync ")
    assert run["modules"] == []


def test_help_and_import_hcpsync_load_no_network_stack() -> None:
    run = loaded_after("from hcpsync.cli.main import main\n"
                       "for argv in (['--help'], ['pull', '--help'], ['verify', '--help']):\n"
                       "    try:\n        main(argv)\n    except SystemExit as stop:\n        assert stop.code == 0\n"
                       "import hcpsync\n"
                       "assert hcpsync.Selection and hcpsync.TransferConfig and hcpsync.StorageOptions and hcpsync.__version__\n"
                       "from hcpsync import HcpsyncError, Plan, ProgressEvent, PullReport\n"
                       "from hcpsync.store import ObjectStore")
    assert "usage: hcpsync pull" in run["stdout"]
    assert run["modules"] == []


def test_every_public_name_resolves_on_first_use() -> None:
    import hcpsync

    for name in hcpsync.__all__:
        assert getattr(hcpsync, name) is not None, name
    assert set(hcpsync.__all__) <= set(dir(hcpsync))
    from hcpsync import Mirror, pull_sync, verify_tree

    assert Mirror.__module__ == "hcpsync.api" and pull_sync.__name__ == "pull_sync" and verify_tree
    with pytest.raises(AttributeError):
        hcpsync.no_such_name  # noqa: B018


def test_an_anonymous_pull_from_plain_http_loads_no_botocore(moto_url: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    fast_put(bucket, {f"{SUBJ}T1w/a.nii.gz": b"a" * 1024})
    public = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"],
                                                      "Resource": [f"arn:aws:s3:::{bucket}/*"]}]}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public))
    argv = ["pull", f"s3://{bucket}/{SUBJ}", str(tmp_path), "--endpoint-url", moto_url, "--no-sign-request", "-q"]
    run = loaded_after(f"from hcpsync.cli.main import main\nassert main({argv!r}) == 0", ("aiobotocore", "botocore", "aiohttp"))
    assert (tmp_path / "100307/T1w/a.nii.gz").read_bytes() == b"a" * 1024
    assert run["modules"] == ["aiohttp"]


def test_tls_context_of_a_plain_http_endpoint_loads_no_ca_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("no certificate here")  # any readable file: it is not parsed for a plain-HTTP endpoint
    made: list[object] = []
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: made.append(a) or pytest.fail("context made"))
    assert tls_context(str(bundle), True, "http://127.0.0.1:9000") is True
    assert tls_context(None, True, "http://127.0.0.1:9000") is True
    assert tls_context(str(bundle), False, "https://s3.example.org") is False
    assert made == []
    with pytest.raises(UsageError, match="cannot use the CA bundle"):  # still named when it cannot be read
        tls_context(str(tmp_path / "nope.pem"), True, "http://127.0.0.1:9000")
    monkeypatch.undo()
    with pytest.raises(UsageError, match="cannot use the CA bundle"):  # https: parsed, and refused
        tls_context(str(bundle), True, "https://s3.example.org")


async def test_storage_builds_no_botocore_client_and_no_tls_context_for_http(
    moto_url: str, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from aiobotocore.session import AioSession

    def no_client(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a botocore client was built")

    loaded: list[object] = []
    real_load = ssl.SSLContext.load_verify_locations

    def load(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loaded.append(args)
        real_load(self, *args, **kwargs)

    monkeypatch.setattr(AioSession, "create_client", no_client)
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", load)
    monkeypatch.setenv("AWS_CA_BUNDLE", ssl.get_default_verify_paths().cafile or os.devnull)
    fast_put(bucket, {f"{SUBJ}T1w/a b+c.nii": b"x" * 7, f"{SUBJ}T1w/d": b"y"})
    async with S3Storage(StorageOptions(endpoint_url=moto_url), TransferConfig()) as s3:  # signed (fake keys)
        assert s3.credential_source == "env"
        pages = [page async for page in s3.list_pages(bucket, f"{SUBJ}T1w/")]
        assert sorted(o.key for o in pages[0][0]) == [f"{SUBJ}T1w/a b+c.nii", f"{SUBJ}T1w/d"]
        assert (await s3.head(bucket, f"{SUBJ}T1w/a b+c.nii")).size == 7
        folders = [page async for page in s3.list_pages(bucket, SUBJ, delimiter="/")]
        assert folders == [([], [f"{SUBJ}T1w/"])]
        with pytest.raises(NoSuchKeyError):
            await s3.head(bucket, f"{SUBJ}nope")
        with pytest.raises(NoSuchBucketError):
            [page async for page in s3.list_pages(f"{bucket}-nope", SUBJ)]
    assert loaded == []


async def test_bad_endpoints_and_regions_are_usage_errors() -> None:
    for opts in (StorageOptions(endpoint_url="not a url"), StorageOptions(endpoint_url="ftp://host/"),
                 StorageOptions(endpoint_url="http://bad host:9000", no_sign_request=True)):
        with pytest.raises(UsageError, match="invalid S3 endpoint URL"):
            async with S3Storage(opts):
                pass
    for opts in (StorageOptions(region="bad region!"),
                 StorageOptions(region="no_underscores", endpoint_url="http://127.0.0.1:1", no_sign_request=True)):
        with pytest.raises(UsageError, match="invalid region"):
            async with S3Storage(opts):
                pass


async def test_no_credentials_is_one_error_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    async with S3Storage(StorageOptions(endpoint_url="http://127.0.0.1:1")) as s3:
        with pytest.raises(CredentialsError, match="no AWS credentials found"):
            [page async for page in s3.list_pages("b", "p/")]
        with pytest.raises(CredentialsError, match="no AWS credentials found"):
            await s3.head("b", "k")


# --- the listing and HEAD answers, parsed and translated --------------------------------------

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def test_parse_listing_decodes_url_encoded_keys_with_or_without_a_namespace() -> None:
    for ns in (NS, ""):
        body = (f'<?xml version="1.0"?><ListBucketResult {ns}><Name>b</Name><Prefix>p%2F</Prefix>'
                "<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
                "<NextContinuationToken>t+1/=</NextContinuationToken>"
                "<Contents><Key>p/a+b%25c%0D.nii</Key><Size>12</Size><ETag>&quot;abc&quot;</ETag></Contents>"
                "<CommonPrefixes><Prefix>p/sub+dir/</Prefix></CommonPrefixes></ListBucketResult>").encode()
        assert parse_listing(body, "b", "p/") == {
            "IsTruncated": True, "NextContinuationToken": "t+1/=",
            "Contents": [{"Key": "p/a b%c\r.nii", "Size": 12, "ETag": '"abc"'}],
            "CommonPrefixes": [{"Prefix": "p/sub dir/"}],
        }
    plain = f"<ListBucketResult {NS}><IsTruncated>false</IsTruncated><Contents><Key>a+b</Key></Contents></ListBucketResult>"
    assert parse_listing(plain.encode(), "b", "") == {"IsTruncated": False, "Contents": [{"Key": "a+b", "Size": 0, "ETag": ""}]}


def test_parse_listing_refuses_what_is_no_s3_listing() -> None:
    with pytest.raises(NotS3Error, match="no S3 XML"):
        parse_listing(b"<html><body>Welcome", "b", "p/")
    with pytest.raises(NotS3Error, match="<html>"):
        parse_listing(b"<html><body>Welcome</body></html>", "b", "p/")
    with pytest.raises(BadResponseError, match="not a number"):
        parse_listing(b"<ListBucketResult><Contents><Key>k</Key><Size>big</Size></Contents></ListBucketResult>", "b", "")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def s3_error(status: int, code: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, headers=headers, content_type="application/xml",
                        body=f"<Error><Code>{code}</Code><Message>{code} here</Message></Error>".encode())


@pytest.mark.parametrize("answer, error, match", [
    (lambda: s3_error(404, "NoSuchBucket"), NoSuchBucketError, "bucket 'b' does not exist"),
    (lambda: web.Response(status=404, text="<html>no</html>"), NotS3Error, "not an S3 API"),
    (lambda: s3_error(403, "AccessDenied"), AccessDeniedError, "access denied to s3://b/p/"),
    (lambda: s3_error(503, "SlowDown"), ThrottledError, "SlowDown"),
    (lambda: web.Response(status=200, text="<html>welcome</html>"), NotS3Error, "not S3's <ListBucketResult>"),
    (lambda: s3_error(301, "PermanentRedirect", {"Location": "http://elsewhere/b?x=1"}), RedirectError, "elsewhere/b"),
])
async def test_listing_errors_are_translated_as_before(answer: Callable[[], web.Response], error: type[Exception],
                                                       match: str) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.query["list-type"] == "2" and request.query["encoding-type"] == "url"
        assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
        return answer()

    async for url in serve(handler):
        cfg = TransferConfig(retries=1, backoff_base=0.0001, backoff_max=0.0001)
        async with S3Storage(StorageOptions(endpoint_url=url), cfg) as s3:
            with pytest.raises(error, match=match):
                [page async for page in s3.list_pages("b", "p/")]


async def test_head_answers_and_errors() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.method == "HEAD"
        if request.path == "/b/missing":
            return web.Response(status=404)
        if request.path == "/b/denied":
            return web.Response(status=403)
        return web.Response(headers={"ETag": '"0123"'}, body=b"x" * 42)  # (aiohttp sends no body to a HEAD)

    async for url in serve(handler):
        async with S3Storage(StorageOptions(endpoint_url=url, no_sign_request=True)) as s3:
            assert await s3.head("b", "a key") == ObjectInfo("a key", 42, "0123", encrypted=False)
            with pytest.raises(NoSuchKeyError, match="s3://b/missing does not exist"):
                await s3.head("b", "missing")
            with pytest.raises(AccessDeniedError, match="access denied to s3://b/denied"):
                await s3.head("b", "denied")
            probe = await s3.probe_bucket("b")
            assert probe.server_date is not None and probe.region is None
