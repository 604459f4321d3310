"""The fault-injecting proxy itself: faithful pass-through, counters, and every fault kind."""

from __future__ import annotations

import asyncio
import gzip
import io
import socket
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from conftest import det_bytes, put_objects
from faultproxy import LOOP_TOKEN, FaultProxy, Rule, classify, fake_etag
from yarl import URL

NO_RETRY = {"total_max_attempts": 1}


def make_client(endpoint: str, **config: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(retries=NO_RETRY, s3={"addressing_style": "path"}, **config),
    )


@pytest.fixture
def pc(proxy: FaultProxy) -> Iterator[Any]:
    """A boto3 S3 client talking through the proxy, without retries."""
    client = make_client(proxy.url)
    yield client
    client.close()


def presign(client: Any, bucket: str, key: str) -> URL:
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    return URL(url, encoded=True)


def error_of(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[int, str]:
    resp = exc.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"]


# --------------------------------------------------------------------------- pass-through


def test_passthrough_get_is_byte_identical(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    data = det_bytes(6 * 1024 * 1024 + 123, "big")
    put_objects(s3, bucket, {"dir/big.bin": data})
    direct = s3.head_object(Bucket=bucket, Key="dir/big.bin")

    resp = pc.get_object(Bucket=bucket, Key="dir/big.bin")
    assert resp["Body"].read() == data
    assert resp["ContentLength"] == len(data)
    assert resp["ETag"] == direct["ETag"]
    assert resp["LastModified"] == direct["LastModified"]
    assert proxy.counts == {"get": 1}
    assert proxy.bytes_sent == len(data)
    assert proxy.faults == {}
    assert proxy.requests_log == [("GET", "get", "dir/big.bin", None)]

    proxy.reset_counts()
    assert proxy.counts == {} and proxy.bytes_sent == 0 and proxy.requests_log == []


def test_ranged_get(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    data = det_bytes(100_000, "ranged")
    put_objects(s3, bucket, {"r.bin": data})
    resp = pc.get_object(Bucket=bucket, Key="r.bin", Range="bytes=1000-5999")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert resp["ContentRange"] == f"bytes 1000-5999/{len(data)}"
    assert resp["ContentLength"] == 5000
    assert resp["Body"].read() == data[1000:6000]
    assert proxy.bytes_sent == 5000
    assert proxy.requests_log == [("GET", "get", "r.bin", "bytes=1000-5999")]


def test_put_head_list_if_match_and_keepalive(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    body = det_bytes(300_000, "put")
    # A file-like body makes botocore send ``Expect: 100-continue``.
    pc.put_object(Bucket=bucket, Key="a/b c+d.bin", Body=io.BytesIO(body))
    assert s3.get_object(Bucket=bucket, Key="a/b c+d.bin")["Body"].read() == body

    head = pc.head_object(Bucket=bucket, Key="a/b c+d.bin")
    assert head["ContentLength"] == len(body)
    listing = pc.list_objects_v2(Bucket=bucket, Prefix="a/")
    assert [o["Key"] for o in listing["Contents"]] == ["a/b c+d.bin"]

    got = pc.get_object(Bucket=bucket, Key="a/b c+d.bin", IfMatch=head["ETag"])
    assert got["Body"].read() == body
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        pc.get_object(Bucket=bucket, Key="a/b c+d.bin", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert error_of(exc)[0] == 412

    for _ in range(5):
        pc.head_object(Bucket=bucket, Key="a/b c+d.bin")
    assert proxy.counts == {"put": 1, "head": 6, "list": 1, "get": 2}
    assert ("PUT", "put", "a/b c+d.bin", None) in proxy.requests_log
    assert proxy.connections == 1  # every request reused one keep-alive connection


async def test_many_concurrent_connections(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    objects = {f"c/{i:03d}": det_bytes(100_000 + i, f"conc{i}") for i in range(64)}
    put_objects(s3, bucket, objects)
    urls = {key: presign(pc, bucket, key) for key in objects}

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def fetch(key: str) -> tuple[str, bytes]:
            async with session.get(urls[key]) as resp:
                assert resp.status == 200
                return key, await resp.read()

        results = dict(await asyncio.gather(*(fetch(k) for k in objects)))

    assert results == objects
    assert proxy.counts == {"get": 64}
    assert proxy.bytes_sent == sum(len(v) for v in objects.values())
    assert proxy.connections > 8  # really concurrent, not serialised on one connection


# --------------------------------------------------------------------------- error replies


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("slowdown", 503, "SlowDown"), ("internal", 500, "InternalError"), ("denied", 403, "AccessDenied")],
)
def test_error_faults(
    proxy: FaultProxy, pc: Any, s3: Any, bucket: str, fault: Any, status: int, code: str
) -> None:
    put_objects(s3, bucket, {"k": b"payload"})
    proxy.add_rule(Rule(fault))
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        pc.get_object(Bucket=bucket, Key="k")
    assert error_of(exc) == (status, code)
    assert proxy.faults == {fault: 1}
    assert proxy.bytes_sent == 0
    # Other request kinds are untouched by a default (GET-only) rule.
    assert pc.head_object(Bucket=bucket, Key="k")["ContentLength"] == 7


async def test_slowdown_reply_is_s3_xml(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    put_objects(s3, bucket, {"k": b"payload"})
    proxy.add_rule(Rule("slowdown"))
    async with aiohttp.ClientSession() as session, session.get(presign(pc, bucket, "k")) as resp:
        body = await resp.text()
        assert resp.status == 503
        assert resp.headers["Content-Type"] == "application/xml"
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>')
    assert "<Message>Please reduce your request rate.</Message><RequestId>" in body


def test_list_fail(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    put_objects(s3, bucket, {"k": b"payload"})
    proxy.add_rule(Rule("list_fail"))
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        pc.list_objects_v2(Bucket=bucket)
    assert error_of(exc) == (500, "InternalError")
    assert pc.get_object(Bucket=bucket, Key="k")["Body"].read() == b"payload"
    assert proxy.faults == {"list_fail": 1}
    assert proxy.counts == {"list": 1, "get": 1}


# --------------------------------------------------------------------------- broken bodies


async def test_reset_after_bytes(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    data = det_bytes(500_000, "reset")
    put_objects(s3, bucket, {"k": data})
    proxy.add_rule(Rule("reset", after_bytes=10_000, times=1))
    received = bytearray()
    async with aiohttp.ClientSession() as session:
        async with session.get(presign(pc, bucket, "k")) as resp:
            assert resp.status == 200
            assert resp.content_length == len(data)
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in resp.content.iter_any():
                    received += chunk
        # times=1: the next GET goes through intact.
        async with session.get(presign(pc, bucket, "k")) as resp:
            assert await resp.read() == data
    assert bytes(received) == data[:10_000]  # delivered before the RST
    assert proxy.faults == {"reset": 1}


def test_reset_seen_by_boto3(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    put_objects(s3, bucket, {"k": det_bytes(200_000, "r")})
    proxy.add_rule(Rule("reset"))
    resp = pc.get_object(Bucket=bucket, Key="k")  # headers arrive, then the connection dies
    with pytest.raises(botocore.exceptions.ResponseStreamingError):
        resp["Body"].read()


async def test_short_body(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    data = det_bytes(400_000, "short")
    put_objects(s3, bucket, {"k": data})
    proxy.add_rule(Rule("short", after_bytes=123_456, times=1))
    received = bytearray()
    async with aiohttp.ClientSession() as session, session.get(presign(pc, bucket, "k")) as resp:
        assert resp.content_length == len(data)  # the true length is announced
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                received += chunk
    assert bytes(received) == data[:123_456]
    assert proxy.bytes_sent == 123_456


def test_short_default_is_half_and_boto3_sees_incomplete_read(
    proxy: FaultProxy, pc: Any, s3: Any, bucket: str
) -> None:
    put_objects(s3, bucket, {"k": det_bytes(300_000, "half")})
    proxy.add_rule(Rule("short"))
    resp = pc.get_object(Bucket=bucket, Key="k")
    assert resp["ContentLength"] == 300_000
    with pytest.raises(botocore.exceptions.ResponseStreamingError, match="IncompleteRead"):
        resp["Body"].read()
    assert proxy.bytes_sent == 150_000


def test_stall_times_out_client_and_stop_is_prompt(s3: Any, bucket: str, moto_url: str) -> None:
    put_objects(s3, bucket, {"k": det_bytes(200_000, "stall")})
    proxy = FaultProxy(moto_url)
    proxy.start()
    client = make_client(proxy.url, read_timeout=0.5, connect_timeout=2)
    try:
        proxy.add_rule(Rule("stall", after_bytes=1000, stall_seconds=60))
        t0 = time.monotonic()
        resp = client.get_object(Bucket=bucket, Key="k")
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            resp["Body"].read()
        assert time.monotonic() - t0 < 2.5
        # The stalled request is still pending inside the proxy; stopping must not wait for it.
        t1 = time.monotonic()
        proxy.stop()
        assert time.monotonic() - t1 < 1.5
        assert proxy.faults == {"stall": 1}
    finally:
        client.close()
        proxy.stop()
    host, port = URL(proxy.url).host, URL(proxy.url).port
    assert host is not None and port is not None
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=1):
        pass


# --------------------------------------------------------------------------- content changes


def test_wrong_range(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    data = det_bytes(10_000, "wr")
    put_objects(s3, bucket, {"k": data})
    proxy.add_rule(Rule("wrong_range", shift=7))
    # A GET without Range is not affected (and does not consume the rule).
    assert pc.get_object(Bucket=bucket, Key="k")["Body"].read() == data
    resp = pc.get_object(Bucket=bucket, Key="k", Range="bytes=100-199")
    assert resp["ContentRange"] == f"bytes 107-199/{len(data)}"
    assert resp["Body"].read() == data[107:200]
    assert proxy.faults == {"wrong_range": 1}
    assert proxy.requests_log[-1] == ("GET", "get", "k", "bytes=100-199")  # logged as the client sent it


def test_mutate_between_ranged_gets(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    old = det_bytes(20_000, "old")
    new = det_bytes(30_000, "new")
    put_objects(s3, bucket, {"m/obj": old, "m/other": b"other"})
    proxy.add_rule(Rule("mutate", key_contains="obj", new_body=new, times=1, after_requests=1))

    first = pc.get_object(Bucket=bucket, Key="m/obj", Range="bytes=0-9999")
    assert first["Body"].read() == old[:10000]
    assert pc.get_object(Bucket=bucket, Key="m/other")["Body"].read() == b"other"  # key does not match
    second = pc.get_object(Bucket=bucket, Key="m/obj", Range="bytes=10000-19999")
    assert second["ETag"] != first["ETag"]
    assert second["ContentRange"] == f"bytes 10000-19999/{len(new)}"
    assert second["Body"].read() == new[10000:20000]
    assert s3.get_object(Bucket=bucket, Key="m/obj")["Body"].read() == new
    third = pc.get_object(Bucket=bucket, Key="m/obj")
    assert third["ETag"] == second["ETag"]
    assert proxy.faults == {"mutate": 1}


def test_delay(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    put_objects(s3, bucket, {"k": b"slow"})
    proxy.add_rule(Rule("delay", delay_seconds=0.4, times=1))
    t0 = time.monotonic()
    assert pc.get_object(Bucket=bucket, Key="k")["Body"].read() == b"slow"
    assert time.monotonic() - t0 >= 0.4
    assert pc.get_object(Bucket=bucket, Key="k")["Body"].read() == b"slow"  # times=1: no delay now
    assert proxy.faults == {"delay": 1}
    assert proxy.counts == {"get": 2}


# --------------------------------------------------------------------------- rule selection


def _outcomes(pc: Any, bucket: str, n: int) -> list[int]:
    out = []
    for _ in range(n):
        try:
            pc.get_object(Bucket=bucket, Key="k")["Body"].read()
            out.append(200)
        except botocore.exceptions.ClientError as exc:
            out.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    return out


def test_probability_with_seed_is_repeatable(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    put_objects(s3, bucket, {"k": b"x"})
    proxy.add_rule(Rule("slowdown", probability=0.3, seed=1234))
    first = _outcomes(pc, bucket, 30)
    proxy.clear_rules()
    proxy.reset_counts()
    proxy.add_rule(Rule("slowdown", probability=0.3, seed=1234))
    second = _outcomes(pc, bucket, 30)
    assert first == second
    assert 0 < first.count(503) < 30
    assert proxy.faults == {"slowdown": first.count(503)}
    proxy.clear_rules()
    proxy.add_rule(Rule("slowdown", probability=0.3, seed=99))
    assert _outcomes(pc, bucket, 30) != first


def test_times_limits_firing(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    put_objects(s3, bucket, {"k": b"x"})
    rule = proxy.add_rule(Rule("internal", times=2))
    assert _outcomes(pc, bucket, 5) == [500, 500, 200, 200, 200]
    assert rule.fired == 2 and rule.seen == 5
    assert proxy.faults == {"internal": 2}
    assert proxy.counts == {"get": 5}


def test_first_firing_rule_wins_and_filters(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    put_objects(s3, bucket, {"good": b"g", "bad/1": b"b"})
    proxy.add_rule(Rule("slowdown", kinds=("get", "head"), key_contains="bad", times=1))
    proxy.add_rule(Rule("internal", key_contains="bad"))
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        pc.head_object(Bucket=bucket, Key="bad/1")
    assert error_of(exc)[0] == 503
    with pytest.raises(botocore.exceptions.ClientError) as exc2:
        pc.get_object(Bucket=bucket, Key="bad/1")  # first rule exhausted -> second applies
    assert error_of(exc2) == (500, "InternalError")
    assert pc.get_object(Bucket=bucket, Key="good")["Body"].read() == b"g"
    assert proxy.faults == {"slowdown": 1, "internal": 1}


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Rule("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="new_body"):
        Rule("mutate")
    with pytest.raises(ValueError, match="probability"):
        Rule("slowdown", probability=1.5)
    with pytest.raises(ValueError, match="kinds"):
        Rule("slowdown", kinds=("gets",))
    assert Rule("list_fail").kinds == ("list",)
    assert Rule("reset", kinds="head").kinds == ("head",)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/bkt/a/b.nii.gz", "", ("get", "bkt", "a/b.nii.gz")),
        ("GET", "/bkt/a/b", "versionId=3&partNumber=1", ("get", "bkt", "a/b")),
        ("GET", "/bkt", "list-type=2&prefix=a%2F", ("list", "bkt", "")),
        ("GET", "/bkt/", "", ("list", "bkt", "")),
        ("GET", "/bkt", "location", ("other", "bkt", "")),
        ("GET", "/bkt/k", "tagging", ("other", "bkt", "k")),
        ("GET", "/", "", ("other", "", "")),
        ("HEAD", "/bkt/k", "", ("head", "bkt", "k")),
        ("PUT", "/bkt/k", "", ("put", "bkt", "k")),
        ("DELETE", "/bkt/k", "", ("other", "bkt", "k")),
    ],
)
def test_classify(method: str, path: str, query: str, expected: tuple[str, str, str]) -> None:
    assert classify(method, path, query) == expected


def test_stop_is_idempotent_and_restartable(moto_url: str) -> None:
    proxy = FaultProxy(moto_url + "/")
    proxy.stop()  # never started: no-op
    url = proxy.start()
    assert url.startswith("http://127.0.0.1:") and proxy.start() == url
    proxy.stop()
    proxy.stop()
    with proxy as again:  # restart on a fresh port
        client = make_client(again.url)
        try:
            assert "Buckets" in client.list_buckets()
        finally:
            client.close()
        assert again.counts == {"other": 1}


# --------------------------------------------------------------------------- wrong answers (issue 9)


def test_list_loop_answers_the_same_token_forever(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    put_objects(s3, bucket, {"l/a": b"a", "l/b": b"b"})
    proxy.add_rule(Rule("list_loop"))
    first = pc.list_objects_v2(Bucket=bucket, Prefix="l/")
    again = pc.list_objects_v2(Bucket=bucket, Prefix="l/", ContinuationToken=first["NextContinuationToken"])
    for page in (first, again):
        assert page["IsTruncated"] is True and page["NextContinuationToken"] == LOOP_TOKEN
        assert [o["Key"] for o in page["Contents"]] == ["l/a", "l/b"]
    assert proxy.faults["list_loop"] == 2


def test_list_no_token_truncates_without_a_token(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    put_objects(s3, bucket, {"l/a": b"a", "l/b": b"b", "l/c": b"c"})
    proxy.add_rule(Rule("list_no_token"))
    page = pc.list_objects_v2(Bucket=bucket, Prefix="l/", MaxKeys=2)  # really truncated upstream
    assert page["IsTruncated"] is True and "NextContinuationToken" not in page
    assert [o["Key"] for o in page["Contents"]] == ["l/a", "l/b"]


def test_fake_etag_on_list_get_and_head(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    data = det_bytes(5000, "sse")
    put_objects(s3, bucket, {"k/x": data})
    real = s3.head_object(Bucket=bucket, Key="k/x")["ETag"]
    fake = f'"{fake_etag(real)}"'
    assert fake != real and len(fake) == 34
    proxy.add_rule(Rule("fake_etag", add_headers={"x-amz-server-side-encryption": "aws:kms"}))
    assert pc.list_objects_v2(Bucket=bucket, Prefix="k/")["Contents"][0]["ETag"] == fake
    head = pc.head_object(Bucket=bucket, Key="k/x")
    assert head["ETag"] == fake and head["ServerSideEncryption"] == "aws:kms"
    got = pc.get_object(Bucket=bucket, Key="k/x", IfMatch=fake)  # If-Match dropped: upstream knows no fake ETag
    assert got["ETag"] == fake and got["ServerSideEncryption"] == "aws:kms" and got["Body"].read() == data


async def test_chunked_gzip_and_weak_etag_bodies(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    data = b"compressible " * 1000
    put_objects(s3, bucket, {"c/chunked": data, "c/gzip": data, "c/weak": data})
    for fault, key in (("chunked", "c/chunked"), ("gzip", "c/gzip"), ("weak_etag", "c/weak")):
        proxy.add_rule(Rule(fault, key_contains=key))  # type: ignore[arg-type]
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(presign(pc, bucket, "c/chunked")) as resp:
            assert "Content-Length" not in resp.headers and resp.headers["Transfer-Encoding"] == "chunked"
            assert await resp.read() == data
        async with session.get(presign(pc, bucket, "c/gzip")) as resp:
            body = await resp.read()
            assert resp.headers["Content-Encoding"] == "gzip" and int(resp.headers["Content-Length"]) == len(body)
            assert len(body) < len(data) and gzip.decompress(body) == data
        async with session.get(presign(pc, bucket, "c/weak")) as resp:
            assert resp.headers["ETag"].startswith('W/"') and await resp.read() == data
    assert proxy.faults == {"chunked": 1, "gzip": 1, "weak_etag": 1}


async def test_redirect_and_drip(proxy: FaultProxy, pc: Any, s3: Any, bucket: str) -> None:
    data = det_bytes(600, "drip")
    put_objects(s3, bucket, {"d/x": data})
    proxy.add_rule(Rule("redirect", redirect_status=307, location="http://elsewhere.invalid{path}"))
    proxy.add_rule(Rule("drip", drip_rate=1000))
    async with aiohttp.ClientSession() as session:
        url = URL(f"{proxy.url}/{bucket}?list-type=2&prefix=d%2F", encoded=True)
        async with session.get(url, allow_redirects=False) as resp:
            assert resp.status == 307
            assert resp.headers["Location"] == f"http://elsewhere.invalid/{bucket}?list-type=2&prefix=d%2F"
        t0 = time.monotonic()
        async with session.get(presign(pc, bucket, "d/x")) as resp:
            assert await resp.read() == data
        assert time.monotonic() - t0 >= 0.45  # 600 bytes at 1000 B/s
    assert proxy.faults == {"redirect": 1, "drip": 1}
