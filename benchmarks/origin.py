"""A local S3 origin for benchmarks: Debian's nginx in front of a small listing service.

Layout served: ``<root>/<bucket>/<key>`` (what :mod:`benchmarks.workloads` generates), on
``http://127.0.0.1:<port>`` with path-style addressing.  Authorization headers and
signatures are ignored, so clients may send unsigned requests (``--no-sign-request``,
``botocore.UNSIGNED``) or sign with dummy credentials.

How requests are routed (one nginx port):

* **Objects** (``GET``/``HEAD /<bucket>/<key>``) are static files served by nginx itself:
  ``sendfile on; tcp_nopush on;``, byte ranges (``Range``, ``If-Range``), conditional
  requests (``If-Match``, ``If-None-Match``, ``If-(Un)Modified-Since``), an ``open_file_cache``,
  ``Content-Type: application/octet-stream``.  Missing keys (and directories, via
  ``try_files $uri =404``) answer 404 with an S3 ``NoSuchKey`` XML body; a failed ``If-Match``
  412 ``PreconditionFailed``; an unsatisfiable range 416 ``InvalidRange``.
* **Bucket-level requests** (``/``, ``/<bucket>``, ``/<bucket>/`` with any query string:
  ListObjectsV2 ``?list-type=2``, ListObjects v1, HeadBucket, ``?location``, ListBuckets) go
  through ``proxy_pass`` to :mod:`benchmarks.s3listing`, a threaded stdlib HTTP service on
  another loopback port that scans the tree once at start.  Routing is on the *path* shape
  (a location regex ``^/[^/]+/?$``), which covers ``$arg_list_type`` and every other
  bucket sub-resource without nginx ``if``.

ETags: nginx's ETag for a static file is ``"<mtime hex>-<size hex>"`` (strong, not an MD5;
it contains a ``-``, so clients that treat a dash-less 32-hex ETag as an MD5 will not try to
check it).  The listing service computes the same string from ``stat``, so ``<ETag>`` in
listings is byte-identical to the header on GET/HEAD, and a GET with ``If-Match: <that
ETag>`` (quoted, as botocore sends it) succeeds with 200/206 while any other ETag gets 412.

**S3-like mode** (``s3like=True`` / ``--s3like``) makes the origin behave more like S3 seen
over a WAN: every object GET/HEAD is limited to ``rate`` bytes/s (default 25 MB/s) with
nginx's ``limit_rate`` (nginx applies it per request, which for S3 clients that keep one
request in flight per connection is per connection), and every request waits
``first_byte_ms`` (default 20 ms) before its first byte.  The delay mechanism:

* ``echo`` (preferred, used when Debian's ``libnginx-mod-http-echo`` is installed): the
  object location runs ``echo_sleep <s>; echo_exec @object;`` -- a non-blocking timer in the
  nginx event loop, then an internal redirect to the static-file location, so ranges,
  conditionals and sendfile behave exactly as without the delay.
* ``accel`` (fallback without the echo module): object requests are proxied to the listing
  service, which sleeps and answers ``X-Accel-Redirect: /_objects/<bucket>/<key>``; nginx
  then serves the file from an ``internal`` location.  It costs a Python hop per request
  (threads; fine at benchmark concurrencies, but the echo path is cheaper).

**HTTPS** (``tls=True`` / ``--tls``): nginx serves the same tree over TLS (``listen ... ssl``,
TLS 1.2/1.3, nginx's default ciphers: AES-GCM with AES-NI) with a certificate for
``127.0.0.1``/``localhost`` signed by a private benchmark CA (:func:`ensure_tls_files`, made once
with the ``cryptography`` package, else the ``openssl`` CLI, and kept in ``work/tls/``); the URL
is ``https://127.0.0.1:<port>`` and :attr:`Origin.ca_bundle` is the CA's PEM file: ``hcpsync
--ca-bundle CA``, ``curl --cacert CA``, ``s5cmd --no-verify-ssl`` (it has no CA option).  The
listing service stays plain HTTP behind nginx.  TLS rules out ``sendfile``: nginx reads and
encrypts every byte (its CPU counts as origin CPU, on the same cores as the client).

Listings wait the same delay inside the listing service.  ``rate`` and ``first_byte_ms`` can
also be given without ``s3like`` (explicit values always win; 0 means none).

nginx runs as a non-daemon child (``daemon off; master_process on; worker_processes auto``;
``user root`` when run as root) with a generated config; pid file, logs and temp paths live
in a private temp directory removed on :meth:`Origin.stop`.  Install it with
``apt-get install -y nginx libnginx-mod-http-echo`` (``benchmarks/setup.sh`` does).

Usage::

    with Origin(Path("benchmarks/work/subject")) as origin:
        print(origin.url)                     # http://127.0.0.1:PORT

    python -m benchmarks.origin --root benchmarks/work/subject [--s3like]   # serve until Ctrl-C
    python -m benchmarks.origin --workload subject-tiny                      # generate if needed, serve
    python -m benchmarks.origin --selftest [--s3like]                        # prove it is fast
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import http.client
import ipaddress
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal

BENCH_DIR = Path(__file__).resolve().parent
LISTING_SCRIPT = BENCH_DIR / "s3listing.py"
TLS_DIR = BENCH_DIR / "work" / "tls"

S3LIKE_RATE = 25_000_000  # bytes/s per request (25 MB/s)
S3LIKE_FIRST_BYTE_MS = 20
INSTALL_HINT = (
    "nginx is not installed: run 'bash benchmarks/setup.sh' "
    "(or 'apt-get update && apt-get install -y nginx libnginx-mod-http-echo')"
)
ACCEL_PREFIX = "/_objects"
HEALTH_PATH = "/__origin_health"
ECHO_MODULE = "ngx_http_echo_module.so"

DelayMechanism = Literal["auto", "echo", "accel"]

_NOSUCHKEY = "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"
_PRECONDITION = (
    "<Error><Code>PreconditionFailed</Code>"
    "<Message>At least one of the pre-conditions you specified did not hold</Message></Error>"
)
_INVALID_RANGE = (
    "<Error><Code>InvalidRange</Code><Message>The requested range is not satisfiable</Message></Error>"
)


class OriginError(RuntimeError):
    """The origin could not be started (nginx missing, bad root, port trouble...)."""


def find_nginx() -> str:
    """Path of the nginx binary, or :class:`OriginError` telling how to install it."""
    found = shutil.which("nginx")
    if found:
        return found
    for cand in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(cand, os.X_OK):
            return cand
    raise OriginError(INSTALL_HINT)


def nginx_modules_dir(nginx: str) -> Path:
    """``--modules-path`` from ``nginx -V`` (Debian: /usr/lib/nginx/modules)."""
    try:
        out = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=10, check=False).stderr
    except (OSError, subprocess.SubprocessError):
        out = ""
    m = re.search(r"--modules-path=(\S+)", out)
    return Path(m.group(1)) if m else Path("/usr/lib/nginx/modules")


def echo_module(nginx: str) -> Path | None:
    """The echo module's ``.so`` if installed (Debian: libnginx-mod-http-echo)."""
    path = nginx_modules_dir(nginx) / ECHO_MODULE
    return path if path.is_file() else None


def parse_size(text: str) -> int:
    """``25MB`` -> 25_000_000, ``64MiB`` -> 67_108_864, ``1g``/``1GB`` decimal, bare number = bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    num, unit, binary = float(m.group(1)), m.group(2).lower(), bool(m.group(3))
    power = "_kmgt".index(unit) if unit else 0
    return int(num * (1024 if binary else 1000) ** power)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this child when the thread that started it dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the HTTPS origin: the CA clients trust, the server chain and key."""

    ca: Path  # the benchmark CA's certificate: --ca-bundle / --cacert
    chain: Path  # the server certificate followed by the CA's (nginx ssl_certificate)
    key: Path  # the server's private key


def ensure_tls_files(directory: Path = TLS_DIR) -> TlsFiles:
    """A private CA and a server certificate for ``127.0.0.1`` and ``localhost`` (RSA 2048, like
    S3's), made once in ``directory`` (and again when a file is missing or the certificate
    expires within a day)."""
    files = TlsFiles(directory / "ca.pem", directory / "chain.pem", directory / "key.pem")
    if all(p.is_file() for p in (files.ca, files.chain, files.key)) and _valid_for_a_day(files.chain):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    try:
        _make_tls_cryptography(files)
    except ImportError:
        _make_tls_openssl(files)
    return files


def _valid_for_a_day(chain: Path) -> bool:
    try:
        out = subprocess.run(["openssl", "x509", "-checkend", "86400", "-noout", "-in", str(chain)],
                             capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return True  # no openssl CLI: trust the 10-year validity it was made with
    return out.returncode == 0


def _make_tls_cryptography(files: TlsFiles) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hcpsync benchmark CA")])
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     **{**usage, "key_encipherment": True}), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.NoEncryption()))
    files.key.chmod(0o600)
    files.ca.write_bytes(ca.public_bytes(pem))
    files.chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))


def _make_tls_openssl(files: TlsFiles) -> None:
    d = files.ca.parent
    ca_key, csr, ext = d / "ca.key", d / "server.csr", d / "server.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        res = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise OriginError(f"openssl {args[0]} failed: {res.stderr.strip()}")

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(files.ca), "-days",
        "3650", "-subj", "/CN=hcpsync benchmark CA", "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files.key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    leaf = d / "server.pem"
    run("x509", "-req", "-in", str(csr), "-CA", str(files.ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(leaf), "-days", "3650", "-extfile", str(ext))
    files.chain.write_bytes(leaf.read_bytes() + files.ca.read_bytes())


def _xml_literal(s: str) -> str:
    return "'" + '<?xml version="1.0" encoding="UTF-8"?>\\n' + s + "'"


class Origin:
    """nginx + listing service serving ``root`` on ``http://127.0.0.1:<port>``.

    ``rate`` (bytes/s per request, 0 = unlimited) and ``first_byte_ms`` default to
    25 MB/s and 20 ms with ``s3like`` and to none without.  Use as a context manager or
    call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        root: Path,
        s3like: bool = False,
        rate: int | None = None,
        first_byte_ms: int | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int | None = None,
        access_log: bool = False,
        open_file_cache: bool = True,
        delay_mechanism: DelayMechanism = "auto",
        keep_tmp: bool = False,
        die_with_parent: bool = True,
        tls: bool = False,
        tls_dir: Path = TLS_DIR,
    ) -> None:
        if not host.startswith("127."):
            raise OriginError(f"the benchmark origin only listens on loopback (127.0.0.0/8), not {host!r}")
        self.root = Path(root).resolve()
        self.s3like = s3like
        self.rate = rate if rate is not None else (S3LIKE_RATE if s3like else 0)
        self.first_byte_ms = (
            first_byte_ms if first_byte_ms is not None else (S3LIKE_FIRST_BYTE_MS if s3like else 0)
        )
        if self.rate < 0 or self.first_byte_ms < 0:
            raise OriginError("rate and first_byte_ms must be >= 0")
        self.host = host
        self.port = port
        self.workers = workers
        self.access_log = access_log
        self.open_file_cache = open_file_cache
        self.delay_mechanism: DelayMechanism = delay_mechanism
        self.keep_tmp = keep_tmp
        self.die_with_parent = die_with_parent
        self.tls = tls
        self.tls_files: TlsFiles | None = ensure_tls_files(tls_dir) if tls else None
        self.mechanism: str = "none"  # the delay mechanism in use once started
        self.tmpdir: Path | None = None
        self._nginx: subprocess.Popen[bytes] | None = None
        self._listing: subprocess.Popen[bytes] | None = None
        self._listing_port = 0

    # ---------------------------------------------------------------- public API

    @property
    def url(self) -> str:
        if self._nginx is None:
            raise OriginError("the origin is not started")
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def ca_bundle(self) -> Path | None:
        """The CA's PEM file clients must trust (HTTPS), else None."""
        return self.tls_files.ca if self.tls_files is not None else None

    @property
    def running(self) -> bool:
        return (
            self._nginx is not None
            and self._nginx.poll() is None
            and self._listing is not None
            and self._listing.poll() is None
        )

    @property
    def access_log_path(self) -> Path | None:
        return self.tmpdir / "access.log" if self.tmpdir is not None and self.access_log else None

    @property
    def error_log_path(self) -> Path | None:
        return self.tmpdir / "error.log" if self.tmpdir is not None else None

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url if self._nginx is not None else None,
            "root": str(self.root),
            "s3like": self.s3like,
            "rate_bytes_per_s": self.rate,
            "first_byte_ms": self.first_byte_ms,
            "delay_mechanism": self.mechanism,
            "tls": self.tls,
            "ca_bundle": str(self.ca_bundle) if self.ca_bundle else None,
            "tmpdir": str(self.tmpdir) if self.tmpdir else None,
        }

    def __enter__(self) -> Origin:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Origin:
        if self._nginx is not None:
            return self
        nginx = find_nginx()
        if not self.root.is_dir():
            raise OriginError(f"root {self.root} is not a directory (generate a workload first)")
        self.mechanism = "none"
        echo: Path | None = None
        if self.first_byte_ms > 0:
            echo = echo_module(nginx) if self.delay_mechanism in ("auto", "echo") else None
            if self.delay_mechanism == "echo" and echo is None:
                raise OriginError("the echo module is missing: apt-get install -y libnginx-mod-http-echo")
            self.mechanism = "echo" if echo is not None else "accel"
        self.tmpdir = Path(tempfile.mkdtemp(prefix="hcpsync-origin-"))
        try:
            self._start_listing()
            self._start_nginx(nginx, echo)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for attr in ("_nginx", "_listing"):
            proc: subprocess.Popen[bytes] | None = getattr(self, attr)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            setattr(self, attr, None)
        if self.tmpdir is not None and not self.keep_tmp:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None

    def access_log_lines(self) -> list[str]:
        """The access log so far (``access_log=True``): ``msec method uri status bytes time range``."""
        path = self.access_log_path
        if path is None or not path.exists():
            return []
        return path.read_text(encoding="utf-8", errors="replace").splitlines()

    # ---------------------------------------------------------------- internals

    def _popen(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches only us; stop() ends them
                preexec_fn=_die_with_parent if self.die_with_parent and sys.platform == "linux" else None,
            )

    def _start_listing(self) -> None:
        assert self.tmpdir is not None
        port_file = self.tmpdir / "listing.port"
        argv = [sys.executable, str(LISTING_SCRIPT), "--root", str(self.root), "--port-file", str(port_file)]
        if self.first_byte_ms:
            argv += ["--delay-ms", str(self.first_byte_ms)]
        if self.mechanism == "accel":
            argv += ["--accel-prefix", ACCEL_PREFIX]
        self._listing = self._popen(argv, self.tmpdir / "listing.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if port_file.exists():
                self._listing_port = int(port_file.read_text().strip())
                return
            if self._listing.poll() is not None:
                break
            time.sleep(0.02)
        log = (self.tmpdir / "listing.log").read_text(errors="replace")[-2000:]
        raise OriginError(f"the listing service did not start:\n{log}")

    def config(self, echo: Path | None) -> str:
        """The nginx.conf for the current settings (``self.port`` and the listing port set)."""
        assert self.tmpdir is not None
        t = self.tmpdir
        workers = str(self.workers) if self.workers else "auto"
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        main = [
            f"load_module {echo};" if echo is not None and self.mechanism == "echo" else "",
            "daemon off;",
            "master_process on;",
            f"worker_processes {workers};",
            f"worker_rlimit_nofile {nofile};",
            f"pid {t}/nginx.pid;",
            f"lock_file {t}/nginx.lock;",
            f"error_log {t}/error.log warn;",
            "user root;" if os.geteuid() == 0 else "",
        ]
        rate = f"limit_rate {self.rate};" if self.rate else ""
        delay_s = f"{self.first_byte_ms / 1000:.3f}"
        static = f"try_files $uri =404; {rate}"
        if self.mechanism == "echo":
            objects = f"location / {{ echo_sleep {delay_s}; echo_exec @object; }}\n"
            objects += f"    location @object {{ {static} }}"
        elif self.mechanism == "accel":
            accel_root = t / "accel"
            accel_root.mkdir(exist_ok=True)
            link = accel_root / ACCEL_PREFIX.strip("/")
            if not link.exists():
                link.symlink_to(self.root, target_is_directory=True)
            objects = (
                "location / { proxy_pass http://listing; }\n"
                f"    location ^~ {ACCEL_PREFIX}/ {{ internal; root {accel_root}; {static} }}"
            )
        else:
            objects = f"location / {{ {static} }}"
        if self.access_log:
            log = (
                'log_format bench \'$msec $request_method "$request_uri" $status $body_bytes_sent '
                '$request_time "$http_range" $connection $connection_requests\';\n'
                f"    access_log {t}/access.log bench buffer=64k flush=1s;"
            )
        else:
            log = "access_log off;"
        tls = ""
        if self.tls_files is not None:
            tls = (f"ssl_certificate {self.tls_files.chain}; ssl_certificate_key {self.tls_files.key}; "
                   "ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_timeout 1h;")
        ofc = (
            "open_file_cache max=65536 inactive=300s; open_file_cache_valid 30s; open_file_cache_errors on;"
            if self.open_file_cache
            else "open_file_cache off;"
        )
        return f"""# generated by benchmarks/origin.py
{chr(10).join(x for x in main if x)}

events {{
    worker_connections {max(512, min(8192, nofile // 2))};
    multi_accept on;
}}

http {{
    {log}
    client_body_temp_path {t}/client_body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;

    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    reset_timedout_connection on;
    server_tokens off;
    merge_slashes off;
    etag on;
    types {{ }}
    default_type application/octet-stream;
    {ofc}

    upstream listing {{
        server 127.0.0.1:{self._listing_port};
        keepalive 64;
    }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_buffering on;
    proxy_buffers 64 16k;
    proxy_read_timeout 60s;

    server {{
        listen {self.host}:{self.port}{" ssl" if self.tls else ""} backlog=4096;
        server_name _;
        {tls}
        root {self.root};
        autoindex off;
        error_page 404 @nosuchkey;
        error_page 412 @precondition;
        error_page 416 @invalidrange;

        location = {HEALTH_PATH} {{ access_log off; default_type text/plain; return 200 "ok\\n"; }}
        # ListBuckets and every bucket-level request (ListObjects[V2], HeadBucket, ?location...).
        location = / {{ proxy_pass http://listing; }}
        location ~ ^/[^/]+/?$ {{ proxy_pass http://listing; }}
        # Objects.
        {objects}

        location @nosuchkey {{ default_type application/xml; return 404 {_xml_literal(_NOSUCHKEY)}; }}
        location @precondition {{ default_type application/xml; return 412 {_xml_literal(_PRECONDITION)}; }}
        location @invalidrange {{ default_type application/xml; return 416 {_xml_literal(_INVALID_RANGE)}; }}
    }}
}}
"""

    def _start_nginx(self, nginx: str, echo: Path | None) -> None:
        assert self.tmpdir is not None
        fixed = self.port != 0
        conf = self.tmpdir / "nginx.conf"
        last_err = ""
        for _attempt in range(5):
            if not fixed:
                self.port = _free_port(self.host)
            conf.write_text(self.config(echo), encoding="utf-8")
            err_log = self.tmpdir / "error.log"
            err_log.unlink(missing_ok=True)
            argv = [nginx, "-p", str(self.tmpdir), "-c", str(conf), "-e", str(err_log)]
            self._nginx = self._popen(argv, self.tmpdir / "nginx.out")
            if self._wait_ready(timeout=15):
                return
            if self._nginx.poll() is None:
                self._nginx.kill()
            self._nginx.wait(timeout=10)
            self._nginx = None
            last_err = err_log.read_text(errors="replace") if err_log.exists() else ""
            last_err += (self.tmpdir / "nginx.out").read_text(errors="replace")
            if fixed or "Address already in use" not in last_err:
                break
        raise OriginError(f"nginx did not start:\n{last_err[-3000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self._nginx is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._nginx.poll() is not None:
                return False
            try:
                conn: http.client.HTTPConnection
                if self.tls_files is not None:
                    ctx = ssl.create_default_context(cafile=str(self.tls_files.ca))
                    conn = http.client.HTTPSConnection(self.host, self.port, timeout=2, context=ctx)
                else:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
                try:
                    conn.request("GET", HEALTH_PATH)
                    if conn.getresponse().status == 200:
                        return True
                finally:
                    conn.close()
            except OSError:
                pass
            time.sleep(0.02)
        return False


# -------------------------------------------------------------------- self-test


def _curl(args: list[str], timeout: float) -> str:
    if shutil.which("curl") is None:
        raise OriginError("curl is not installed (apt-get install -y curl)")
    res = subprocess.run(["curl", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        raise OriginError(f"curl failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def curl_download(url: str, timeout: float = 600, cacert: Path | None = None) -> dict[str, float]:
    """One ``curl -o /dev/null`` of ``url``: status, bytes, MB/s, time to first byte, total time."""
    out = _curl(
        [
            *(["--cacert", str(cacert)] if cacert else []),
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            str(int(timeout)),
            "-w",
            "%{http_code} %{size_download} %{speed_download} %{time_starttransfer} %{time_total}",
            url,
        ],
        timeout + 30,
    )
    code, size, speed, ttfb, total = out.split()
    return {
        "status": int(code),
        "bytes": int(size),
        "mb_per_s": float(speed) / 1e6,
        "ttfb_ms": float(ttfb) * 1000,
        "total_s": float(total),
    }


def curl_many(urls: list[str], parallel: int = 16, timeout: float = 600, cacert: Path | None = None) -> dict[str, float]:
    """GET every URL with one ``curl --parallel`` (keep-alive): requests/s and statuses."""
    assert urls
    with tempfile.NamedTemporaryFile("w", suffix=".curlrc", delete=False) as f:
        for u in urls:
            f.write(f'url = "{u}"\noutput = "/dev/null"\n')
        cfg = f.name
    try:
        t0 = time.monotonic()
        out = _curl(
            [
                *(["--cacert", str(cacert)] if cacert else []),
                "-s",
                "--parallel",
                "--parallel-immediate",
                "--parallel-max",
                str(parallel),
                "--max-time",
                str(int(timeout)),
                "-w",
                "%{http_code} %{size_download}\\n",
                "-K",
                cfg,
            ],
            timeout + 30,
        )
        wall = time.monotonic() - t0
    finally:
        Path(cfg).unlink()
    lines = [ln.split() for ln in out.splitlines() if ln.strip()]
    ok = sum(1 for code, _ in lines if code == "200")
    nbytes = sum(int(size) for _, size in lines)
    return {
        "requests": len(lines),
        "ok": ok,
        "wall_s": wall,
        "req_per_s": len(lines) / wall,
        "mb_per_s": nbytes / wall / 1e6,
    }


def selftest(
    s3like: bool = False,
    rate: int | None = None,
    first_byte_ms: int | None = None,
    work_dir: Path | None = None,
    runs: int = 3,
    small_requests: int = 2000,
    delay_mechanism: DelayMechanism = "auto",
    tls: bool = False,
) -> dict[str, Any]:
    """Measure the origin with curl: a 1 GiB object (MB/s), TTFB of a small object, small-object req/s.

    Generates the ``large`` and ``subject-tiny`` workloads if needed.  In s3like mode the
    1 GiB download is a single run (about 43 s at 25 MB/s).
    """
    from . import workloads

    wd = work_dir or workloads.DEFAULT_WORK_DIR
    large = workloads.ensure("large", wd, log=True)
    tiny = workloads.ensure("subject-tiny", wd, log=True)
    result: dict[str, Any] = {"s3like": s3like}

    with Origin(
        large.root, s3like=s3like, rate=rate, first_byte_ms=first_byte_ms, delay_mechanism=delay_mechanism, tls=tls
    ) as origin:
        result["origin"] = origin.describe()
        obj = max(large.objects, key=lambda o: o.size)
        url = large.url_of(origin.url, obj.key)
        dl = [curl_download(url, cacert=origin.ca_bundle) for _ in range(1 if origin.rate else runs)]
        for d in dl:
            if d["status"] != 200 or d["bytes"] != obj.size:
                raise OriginError(f"bad download of {url}: {d}")
        speeds = [d["mb_per_s"] for d in dl]
        result["large_object"] = {
            "key": obj.key,
            "bytes": obj.size,
            "runs": len(dl),
            "mb_per_s_best": max(speeds),
            "mb_per_s_median": statistics.median(speeds),
            "ttfb_ms_median": statistics.median(d["ttfb_ms"] for d in dl),
        }

    with Origin(
        tiny.root, s3like=s3like, rate=rate, first_byte_ms=first_byte_ms, delay_mechanism=delay_mechanism, tls=tls
    ) as origin:
        small = sorted(tiny.objects, key=lambda o: o.size)[: len(tiny.objects) // 2]
        ttfb = [curl_download(tiny.url_of(origin.url, o.key), timeout=60, cacert=origin.ca_bundle)["ttfb_ms"]
                for o in small[:20]]
        urls = [tiny.url_of(origin.url, small[i % len(small)].key) for i in range(small_requests)]
        many = curl_many(urls, parallel=16, cacert=origin.ca_bundle)
        if many["ok"] != small_requests:
            raise OriginError(f"{small_requests - many['ok']} small GETs failed: {many}")
        result["small_objects"] = {
            "objects": len(small),
            "max_size": small[-1].size,
            "ttfb_ms_median": statistics.median(ttfb),
            "parallel": 16,
            **many,
        }
    return result


# -------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.origin", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--root", type=Path, help="directory laid out as <root>/<bucket>/<key>")
    src.add_argument("--workload", help="serve benchmarks/work/<NAME> (generated if needed)")
    src.add_argument("--selftest", action="store_true", help="measure the origin with curl and exit")
    ap.add_argument("--s3like", action="store_true", help="rate cap + first-byte delay (S3 over a WAN)")
    ap.add_argument("--tls", action="store_true", help="HTTPS with the benchmark CA's certificate (work/tls/ca.pem)")
    ap.add_argument("--rate", type=parse_size, default=None, help="bytes/s per request, e.g. 25MB (0: none)")
    ap.add_argument("--first-byte-ms", type=int, default=None, help="delay before the first byte (ms)")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--workers", type=int, default=None, help="nginx worker processes (default: auto)")
    ap.add_argument("--access-log", action="store_true", help="keep an access log in the temp dir")
    ap.add_argument("--delay-mechanism", choices=("auto", "echo", "accel"), default="auto")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)

    try:
        if args.selftest:
            res = selftest(args.s3like, args.rate, args.first_byte_ms, delay_mechanism=args.delay_mechanism,
                           tls=args.tls)
            if args.json:
                print(json.dumps(res, indent=2))
            else:
                lo, so, o = res["large_object"], res["small_objects"], res["origin"]
                mode = "plain" + (" HTTPS" if args.tls else "")
                if o["rate_bytes_per_s"] or o["first_byte_ms"]:
                    kind = "s3like" if args.s3like else "custom"
                    mode = f"{kind}: rate {o['rate_bytes_per_s'] / 1e6:g} MB/s per request (0 = none), "
                    mode += f"first byte +{o['first_byte_ms']} ms ({o['delay_mechanism']})"
                print(f"origin mode: {mode}")
                print(
                    f"1 GiB object: {lo['mb_per_s_best']:.0f} MB/s best, "
                    f"{lo['mb_per_s_median']:.0f} MB/s median of {lo['runs']} curl run(s); "
                    f"TTFB {lo['ttfb_ms_median']:.1f} ms"
                )
                print(
                    f"small objects (<= {so['max_size']} B): TTFB {so['ttfb_ms_median']:.1f} ms; "
                    f"{so['requests']} GETs with curl --parallel-max {so['parallel']}: "
                    f"{so['req_per_s']:.0f} req/s"
                )
            return 0
        if args.workload:
            from . import workloads

            root = workloads.ensure(args.workload, log=True).root
        elif args.root:
            root = args.root
        else:
            ap.error("give --root DIR, --workload NAME or --selftest")
        origin = Origin(
            root,
            s3like=args.s3like,
            rate=args.rate,
            first_byte_ms=args.first_byte_ms,
            port=args.port,
            workers=args.workers,
            access_log=args.access_log,
            delay_mechanism=args.delay_mechanism,
            tls=args.tls,
        )

        def on_term(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        with origin:
            info = origin.describe()
            print(json.dumps(info) if args.json else origin.url, flush=True)
            if not args.json:
                print(
                    f"serving {origin.root} (s3like={origin.s3like}, rate={origin.rate} B/s, "
                    f"first_byte={origin.first_byte_ms} ms, delay={origin.mechanism}"
                    + (f", CA {origin.ca_bundle}" if origin.ca_bundle else "") + "); "
                    f"logs in {origin.tmpdir}; Ctrl-C to stop",
                    file=sys.stderr,
                    flush=True,
                )
            try:
                while origin.running:
                    time.sleep(0.5)
                print("origin: a server process exited", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                return 0
    except OriginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
