"""``hcpsync doctor``: what stands between a new user and the HCP bucket, one check a line.

HCP users' most common failure is access: keys from the wrong place (they now come from BALSA's
HCP-YA page), the wrong profile or region, a skewed clock, a release that is not on S3.  Each check
is a short function returning a frozen :class:`Check`; the S3 calls go through :mod:`hcpsync.store`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from .config import TransferConfig
from .errors import AccessDeniedError, CertificateError, CredentialsError, HcpsyncError
from .store.s3 import CREDENTIALS_HINT, BucketProbe, S3Storage, StorageOptions

Status = Literal["ok", "warn", "fail", "skip"]

#: releases on S3 (``HCP_1200`` is HCP-YA's 1200-subject release; the 2025 HCP-YA release is on BALSA only)
DEFAULT_RELEASES = ("HCP_1200", "HCP_Retest")
SKEW_FAIL, SKEW_WARN = 900.0, 60.0  # S3 refuses requests signed more than 15 minutes off
MIN_FREE = 1024**3
_KEYS_ADVICE = CREDENTIALS_HINT.partition(", and check them")[0]

_SOURCES = {
    "env": "environment variables (AWS_ACCESS_KEY_ID)",
    "shared-credentials-file": "the shared credentials file (~/.aws/credentials)",
    "config-file": "the AWS config file (~/.aws/config)",
    "iam-role": "the instance's IAM role",
    "container-role": "the container's role",
    "assume-role": "an assumed role",
    "sso": "AWS SSO",
    "custom-process": "a credential_process",
}


@dataclass(frozen=True)
class Check:
    """One check's outcome: what was found and, unless all is well, what to do."""

    name: str
    status: Status
    detail: str
    advice: str = ""

    def to_json(self) -> dict[str, object]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "advice": self.advice}


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "checks": [c.to_json() for c in self.checks]}


def _now() -> float:
    return time.time()


def check_credentials(s3: S3Storage, opts: StorageOptions) -> Check:
    if opts.no_sign_request:
        return Check("credentials", "ok", "none needed: anonymous requests (--no-sign-request)")
    profile = f" (profile {opts.profile})" if opts.profile else ""
    if s3.credential_source is None:
        return Check("credentials", "fail", f"no AWS credentials found{profile}", _KEYS_ADVICE)
    source = _SOURCES.get(s3.credential_source, s3.credential_source)
    return Check("credentials", "ok", f"found in {source}{profile}")


def check_tls(s3: S3Storage, endpoint: str | None, err: HcpsyncError | None) -> Check:
    if endpoint is not None and urlsplit(endpoint).scheme == "http":
        return Check("tls", "warn", f"{endpoint} is plain HTTP: no TLS")
    if isinstance(err, CertificateError):
        return Check("tls", "fail", str(err).partition(": pass")[0], "pass --ca-bundle PATH (or set AWS_CA_BUNDLE), "
                     "or --no-verify-ssl")
    if not s3.options.verify_ssl:
        return Check("tls", "warn", "the certificate is not verified (--no-verify-ssl)", "drop --no-verify-ssl")
    trusted = f"the CA bundle {s3.ca_bundle}" if s3.ca_bundle else "the default CAs"
    return Check("tls", "skip" if err else "ok", f"certificate verified against {trusted}" if not err else "not reached")


def check_clock(probe: BucketProbe | None) -> Check:
    if probe is None or not probe.server_date:
        return Check("clock", "skip", "the server sent no Date to compare with")
    try:
        server = parsedate_to_datetime(probe.server_date).timestamp()
    except (TypeError, ValueError):
        return Check("clock", "skip", f"the server's Date {probe.server_date!r} is not a date")
    skew = _now() - server
    way = "ahead of" if skew > 0 else "behind"
    detail = f"this machine's clock is {abs(skew):.0f} s {way} the S3 server's"
    fix = "sync the clock (e.g. 'timedatectl set-ntp true', or your OS's time settings)"
    if abs(skew) >= SKEW_FAIL:
        return Check("clock", "fail", f"{detail}: S3 refuses requests signed 15 minutes off (RequestTimeTooSkewed)", fix)
    if abs(skew) > SKEW_WARN:
        return Check("clock", "warn", detail, fix)
    return Check("clock", "ok", detail if abs(skew) > 2 else "in step with the S3 server's")


def check_region(s3: S3Storage, bucket: str, probe: BucketProbe | None, err: HcpsyncError | None) -> Check:
    if isinstance(err, AccessDeniedError):  # keys may be allowed the release prefixes only: those checks tell
        return Check("region", "skip", f"HeadBucket on s3://{bucket} denied; using {s3.region}")
    if probe is None:
        return Check("region", "fail", f"cannot reach s3://{bucket}: {str(err).partition(': HCP data')[0]}")
    if probe.region is None:
        return Check("region", "ok", f"the endpoint does not name the bucket's region; using {s3.region}")
    if probe.region != s3.region:
        return Check("region", "fail", f"s3://{bucket} is in {probe.region}, requests go to {s3.region}",
                     f"pass --region {probe.region}")
    return Check("region", "ok", f"s3://{bucket} is in {probe.region}")


async def check_release(s3: S3Storage, bucket: str, release: str) -> Check:
    name, place = f"release {release}", f"s3://{bucket}/{release}/"
    try:
        async for objects, prefixes in s3.list_pages(bucket, f"{release}/", "/"):
            if objects or prefixes:
                return Check(name, "ok", f"{place} is readable ({len(prefixes)} subject folders on the first page)")
            break
    except HcpsyncError as err:
        return Check(name, "fail", str(err).partition(": HCP data")[0], _KEYS_ADVICE)
    return Check(name, "fail", f"{place} is empty: no such release on this bucket",
                 f"releases on S3 include {', '.join(DEFAULT_RELEASES)}; the 2025 HCP-YA release is on BALSA only")


def _proxy_for(url: str) -> str | None:
    host = urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):  # NO_PROXY
        return None
    return urllib.request.getproxies().get(urlsplit(url).scheme)


async def check_proxy(endpoint: str | None, bucket: str) -> Check:
    url = endpoint or f"https://{bucket}.s3.amazonaws.com"
    proxy = _proxy_for(url)
    if not proxy:
        return Check("proxy", "ok", "none: direct connections (no HTTP(S)_PROXY, or NO_PROXY matches)")
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    shown = f"{parts.scheme}://{parts.hostname}:{parts.port or 80}"  # never the user:password in the URL
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port or 80), 5)
        writer.close()
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        return Check("proxy", "fail", f"cannot connect to the proxy {shown}: {getattr(exc, 'strerror', None) or 'timeout'}",
                     "check HTTPS_PROXY / HTTP_PROXY, or add the endpoint to NO_PROXY")
    return Check("proxy", "ok", f"requests go through {shown}")


def check_dest(dest: str | None) -> Check:
    if dest is None:
        return Check("dest", "skip", "no --dest given to check free space at")
    path = Path(dest)
    if path.exists() and not path.is_dir():
        return Check("dest", "fail", f"{dest} exists and is not a folder", "pass another --dest")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        return Check("dest", "fail", f"{existing} is not writable", "pass a --dest you can write to")
    free = shutil.disk_usage(existing).free
    detail = f"{free / 1024**3:.1f} GiB free at {existing}"
    if free < MIN_FREE:
        return Check("dest", "fail", detail, "free space, or pass another --dest (an HCP subject is GiBs)")
    return Check("dest", "ok", detail)


async def _probe(s3: S3Storage, bucket: str) -> tuple[BucketProbe | None, HcpsyncError | None]:
    try:
        return await s3.probe_bucket(bucket), None
    except HcpsyncError as err:
        return None, err


async def _s3_checks(opts: StorageOptions, bucket: str, releases: Sequence[str]) -> list[Check]:
    try:
        async with S3Storage(opts, TransferConfig(concurrency=4, retries=1)) as s3:
            creds = check_credentials(s3, opts)
            if creds.status == "fail":
                return [creds]
            probe, err = await _probe(s3, bucket)
            checks = [creds, check_tls(s3, opts.resolved_endpoint(), err), check_clock(probe),
                      check_region(s3, bucket, probe, err)]
            return checks + [await check_release(s3, bucket, r) for r in releases]
    except HcpsyncError as err:  # the profile does not exist, an invalid region, an unreadable CA bundle
        if isinstance(err, CredentialsError):
            return [Check("credentials", "fail", str(err).partition(". HCP data")[0], _KEYS_ADVICE)]
        return [Check("setup", "fail", str(err))]


async def run_doctor(opts: StorageOptions, bucket: str, releases: Sequence[str] = DEFAULT_RELEASES,
                     dest: str | None = None) -> DoctorReport:
    """Every check, in order: credentials, TLS, clock, region, each release, proxy, free space at ``dest``."""
    checks = await _s3_checks(opts, bucket, releases)
    checks += [await check_proxy(opts.resolved_endpoint(), bucket), check_dest(dest)]
    return DoctorReport(tuple(checks))
