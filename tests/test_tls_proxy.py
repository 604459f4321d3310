"""TLS and proxies on every request (issue 11): ``--ca-bundle``, ``AWS_CA_BUNDLE``, ``--no-verify-ssl``
and ``HTTP(S)_PROXY`` reach the object GETs as they reach the listings; an unverifiable certificate is
one line naming it, not five retries of "cannot connect".  Through the CLI, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAKE_ENV, det_bytes, fast_put
from netfixtures import NetFixtures, make_ca_and_cert

KEY = "HCP_1200/100307/T1w/T1w_acpc_dc.nii.gz"
DATA = det_bytes(300_000, "tls")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def net() -> Iterator[NetFixtures]:
    fixtures = NetFixtures()
    yield fixtures
    fixtures.stop()


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_ca_and_cert(tmp_path)


def pull(bucket: str, endpoint: str, dest: Path, *extra: str,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in {**os.environ, **FAKE_ENV}.items() if k not in (*_PROXY_VARS, "AWS_CA_BUNDLE", "HCPSYNC_DEBUG")}
    full.update(env or {})
    args = ["pull", "--bucket", bucket, "--subject", "100307", "--endpoint-url", endpoint, "--dest", str(dest),
            "--no-progress", "--retries", "5", *extra]
    return subprocess.run([sys.executable, "-m", "hcpsync", *args], capture_output=True, text=True, env=full,
                          timeout=120, check=False)


def pulled(proc: subprocess.CompletedProcess[str], dest: Path) -> bool:
    assert proc.returncode == 0, proc.stderr
    return (dest / "100307/T1w/T1w_acpc_dc.nii.gz").read_bytes() == DATA


def test_an_unverifiable_certificate_is_one_line_naming_it(moto_url: str, bucket: str, net: NetFixtures,
                                                           pki: tuple[Path, Path, Path], tmp_path: Path) -> None:
    fast_put(bucket, {KEY: DATA})
    url = net.tls_front(moto_url, pki[1], pki[2])
    t0 = time.monotonic()
    proc = pull(bucket, url, tmp_path / "d")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "certificate" in lines[0] and "--ca-bundle" in lines[0] and "--no-verify-ssl" in lines[0]
    assert "cannot connect" not in lines[0]
    assert net.tls_connections <= 2 and time.monotonic() - t0 < 30  # not retried


def test_aws_ca_bundle_reaches_the_gets(moto_url: str, bucket: str, net: NetFixtures, pki: tuple[Path, Path, Path],
                                        tmp_path: Path) -> None:
    fast_put(bucket, {KEY: DATA})
    url = net.tls_front(moto_url, pki[1], pki[2])
    assert pulled(pull(bucket, url, tmp_path / "d", env={"AWS_CA_BUNDLE": str(pki[0])}), tmp_path / "d")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ca_bundle_option(moto_url: str, bucket: str, net: NetFixtures, pki: tuple[Path, Path, Path], tmp_path: Path,
                          workers: str) -> None:
    fast_put(bucket, {KEY: DATA})
    url = net.tls_front(moto_url, pki[1], pki[2])
    # with worker processes, the GETs are theirs: the same CA bundle reaches them
    assert pulled(pull(bucket, url, tmp_path / "d", "--ca-bundle", str(pki[0]), "--workers", workers), tmp_path / "d")


def test_no_verify_ssl(moto_url: str, bucket: str, net: NetFixtures, pki: tuple[Path, Path, Path], tmp_path: Path) -> None:
    fast_put(bucket, {KEY: DATA})
    url = net.tls_front(moto_url, pki[1], pki[2])
    assert pulled(pull(bucket, url, tmp_path / "d", "--no-verify-ssl"), tmp_path / "d")


def test_a_ca_bundle_that_is_no_file_is_one_line(moto_url: str, bucket: str, tmp_path: Path) -> None:
    proc = pull(bucket, moto_url, tmp_path / "d", "--ca-bundle", str(tmp_path / "nope.pem"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot use the CA bundle" in proc.stderr and "nope.pem" in proc.stderr


def test_http_proxy_carries_the_gets_as_well_as_the_listings(moto_url: str, bucket: str, net: NetFixtures,
                                                             tmp_path: Path) -> None:
    fast_put(bucket, {KEY: DATA})
    proxy = net.proxy()
    assert pulled(pull(bucket, moto_url, tmp_path / "d", env={"HTTP_PROXY": proxy}), tmp_path / "d")
    gets = [target for method, target in net.proxy_log if method == "GET"]
    assert any("list-type=2" in t for t in gets), net.proxy_log  # the listing
    assert any(t.startswith(f"{moto_url}/{bucket}/{KEY}") for t in gets), net.proxy_log  # the object's GET


@pytest.mark.parametrize("workers", ["1", "2"])
def test_https_proxy_tunnels_every_connection(moto_url: str, bucket: str, net: NetFixtures,
                                              pki: tuple[Path, Path, Path], tmp_path: Path, workers: str) -> None:
    fast_put(bucket, {KEY: DATA})
    url, proxy = net.tls_front(moto_url, pki[1], pki[2]), net.proxy()
    proc = pull(bucket, url, tmp_path / "d", "--ca-bundle", str(pki[0]), "--workers", workers, env={"HTTPS_PROXY": proxy})
    assert pulled(proc, tmp_path / "d")
    tunnels = [t for method, t in net.proxy_log if method == "CONNECT"]
    # every TLS connection came through the proxy: listings (botocore) and GETs (aiohttp) each open their own
    assert len(tunnels) == net.tls_connections >= 2, (net.proxy_log, net.tls_connections)


def test_no_proxy_is_honoured_by_the_gets(moto_url: str, bucket: str, net: NetFixtures, tmp_path: Path) -> None:
    fast_put(bucket, {KEY: DATA})
    proxy = net.proxy()
    assert pulled(pull(bucket, moto_url, tmp_path / "d", env={"HTTP_PROXY": proxy, "NO_PROXY": "127.0.0.1"}), tmp_path / "d")
    assert net.proxy_log == []
