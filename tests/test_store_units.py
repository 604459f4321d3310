"""Unit tests of the storage layer's parts, without a server: the retry policy, the error tables,
HEAD and listing retries, and the ObjectStore protocol as S3Storage and the fake implement it."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from fakestore import FakeStore

from hcpsync.config import TransferConfig
from hcpsync.errors import (
    AccessDeniedError,
    EndpointError,
    HcpsyncError,
    NoSuchKeyError,
    ThrottledError,
    TransientError,
)
from hcpsync.models import ObjectInfo
from hcpsync.store import ObjectStore, RetryPolicy, S3Storage, map_exceptions, translate, translate_code


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize("impl", [S3Storage, FakeStore])
def test_implementations_have_the_protocols_signatures(impl: type) -> None:
    for name in ("list_pages", "head", "get", "get_bytes"):
        want = inspect.signature(getattr(ObjectStore, name))
        got = inspect.signature(getattr(impl, name))
        assert list(got.parameters) == list(want.parameters), name
        for p, q in zip(got.parameters.values(), want.parameters.values(), strict=True):
            assert (p.kind, p.default) == (q.kind, q.default), (name, p)


def test_policy_retries_retryable_errors_only_and_backs_off_within_bounds() -> None:
    policy = RetryPolicy.from_config(TransferConfig(retries=2, backoff_base=0.5, backoff_max=3.0))
    assert policy == RetryPolicy(2, 0.5, 3.0)
    assert policy.should_retry(TransientError("x"), 0) and policy.should_retry(TransientError("x"), 1)
    assert not policy.should_retry(TransientError("x"), 2)
    assert not policy.should_retry(AccessDeniedError("x"), 0)
    delays = [policy.delay(1) for _ in range(200)]
    assert min(delays) >= 0 and max(delays) <= 1.0  # base * 2**1
    assert max(policy.delay(1, ThrottledError("x")) for _ in range(200)) > 1.0  # throttling waits longer
    assert max(policy.delay(9) for _ in range(200)) <= 3.0  # capped


async def test_policy_call_translates_counts_and_gives_up() -> None:
    policy = RetryPolicy(retries=2, backoff_base=0.0001, backoff_max=0.0001)
    failures = [ConnectionResetError(), client_error("SlowDown", 503)]
    retried: list[HcpsyncError] = []

    async def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    assert await policy.call(flaky, lambda exc: translate(exc, "b", "k"), retried.append) == "ok"
    assert [type(e) for e in retried] == [TransientError, ThrottledError]

    async def denied() -> str:
        raise client_error("AccessDenied", 403)

    with pytest.raises(AccessDeniedError) as info:
        await policy.call(denied, lambda exc: translate(exc, "b", "k"))
    assert isinstance(info.value.__cause__, ClientError)  # chained to the original


def test_error_tables() -> None:
    assert isinstance(translate_code("SlowDown", 503, "", "b", "k"), ThrottledError)
    assert isinstance(translate_code("", 503, "", "b", "k"), ThrottledError)
    assert isinstance(translate_code("InternalError", 503, "", "b", "k"), TransientError)
    assert isinstance(translate_code("", 404, "", "b", "k"), NoSuchKeyError)
    assert not isinstance(translate_code("", 404, "", "b", None), NoSuchKeyError)  # a listing's 404 is no key's
    assert isinstance(translate_code("NoSuchKey", 503, "", "b", "k"), NoSuchKeyError)  # the code's kind comes first
    assert str(translate_code("", 403, "", "b", "k")).startswith("access denied to s3://b/k")
    assert isinstance(translate(EndpointConnectionError(endpoint_url="http://x"), "b"), EndpointError)
    assert str(translate(ValueError(), "b", "k")) == "unexpected ValueError on s3://b/k"
    with pytest.raises(TransientError, match="connection error on s3://b/k: ConnectionResetError"), map_exceptions("b", "k"):
        raise ConnectionResetError


class _Client:
    """Stands in for the aiobotocore client: fails the first calls, then answers."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    async def _answer(self, answer: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return answer

    async def head_object(self, **kw: Any) -> dict[str, Any]:
        return await self._answer({"ContentLength": 7, "ETag": '"abc"'})

    async def list_objects_v2(self, **kw: Any) -> dict[str, Any]:
        return await self._answer({"Contents": [{"Key": "p/a", "Size": 1, "ETag": '"e"'}]})


def storage(failures: list[Exception], retries: int = 3) -> tuple[S3Storage, _Client]:
    s3 = S3Storage(config=TransferConfig(retries=retries, backoff_base=0.0001, backoff_max=0.0001))
    s3._client = client = _Client(failures)
    return s3, client


async def test_head_retries_under_the_policy_and_counts() -> None:
    s3, client = storage([client_error("SlowDown", 503), ConnectionResetError()])
    assert await s3.head("b", "k") == ObjectInfo("k", 7, "abc", encrypted=False)
    assert client.calls == 3 and s3.stats.requests == 3 and s3.stats.retries == 2
    s3, client = storage([client_error("InternalError", 500)] * 5, retries=1)
    with pytest.raises(TransientError, match="InternalError on s3://b/k"):
        await s3.head("b", "k")
    assert client.calls == 2 and s3.stats.retries == 1
    s3, client = storage([client_error("404", 404)])
    with pytest.raises(NoSuchKeyError):  # not retryable: one request
        await s3.head("b", "k")
    assert client.calls == 1


async def test_listing_retries_under_the_same_policy() -> None:
    s3, client = storage([client_error("SlowDown", 503)])
    pages = [page async for page in s3.list_pages("b", "p/")]
    assert pages == [([ObjectInfo("p/a", 1, "e")], [])]
    assert client.calls == 2 and s3.stats.requests == 2 and s3.stats.retries == 1
