"""The storage layer's fast GET path: URLs, error bodies, region redirects."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from hcpsync.config import TransferConfig
from hcpsync.store.s3_http import FastGetter, bucket_url, object_url, parse_error


def test_object_url_styles() -> None:
    assert object_url("http://127.0.0.1:9000/", "us-east-1", "b", "HCP_1200/1/a b+c.nii") == \
        "http://127.0.0.1:9000/b/HCP_1200/1/a%20b%2Bc.nii"
    assert object_url(None, "eu-west-1", "hcp-openaccess", "HCP_1200/x~y") == \
        "https://hcp-openaccess.s3.eu-west-1.amazonaws.com/HCP_1200/x~y"
    # a dotted bucket cannot be a host under AWS's wildcard certificate: path-style, as botocore sends it
    assert object_url(None, "us-east-1", "openneuro.org", "ds000001/a b") == \
        "https://s3.us-east-1.amazonaws.com/openneuro.org/ds000001/a%20b"
    assert bucket_url(None, "us-east-1", "openneuro.org") == "https://s3.us-east-1.amazonaws.com/openneuro.org"
    assert bucket_url(None, "eu-west-1", "hcp-openaccess") == "https://hcp-openaccess.s3.eu-west-1.amazonaws.com/"
    assert bucket_url("http://127.0.0.1:9000/", "us-east-1", "b") == "http://127.0.0.1:9000/b"


def test_parse_error() -> None:
    body = b'<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce</Message></Error>'
    assert parse_error(body) == ("SlowDown", "Please reduce")
    assert parse_error(b"not xml") == ("", "")


async def test_region_redirect_is_followed_once_and_remembered(monkeypatch: Any) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        region = request.headers["Authorization"].split("/")[2]  # Credential=AK/date/REGION/s3/...
        seen.append(region)
        if region != "eu-central-1":
            return web.Response(status=301, headers={"x-amz-bucket-region": "eu-central-1"})
        return web.Response(body=b"payload")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    from botocore.credentials import Credentials

    getter = FastGetter(TransferConfig(), None, "us-east-1", Credentials("AKIDEXAMPLE", "secret"), False)
    # talk to the local server in place of AWS
    monkeypatch.setattr("hcpsync.store.s3_http.object_url",
                        lambda endpoint, region, bucket, key: f"http://127.0.0.1:{port}/{bucket}/{key}")
    try:
        for _ in range(2):
            resp = await getter.get("bkt", "k", {})
            assert resp.status == 200 and await resp.read() == b"payload"
            resp.close()
    finally:
        await getter.close()
        await runner.cleanup()
    assert seen == ["us-east-1", "eu-central-1", "eu-central-1"]
    await asyncio.sleep(0)
