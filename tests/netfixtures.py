"""Network stand-ins for tests: a TLS-terminating front for an HTTP endpoint (with a CA made on
the spot) and a forward proxy (HTTP absolute-form requests and CONNECT tunnels) that logs what
it carries.  Both run on one asyncio loop in a daemon thread, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_REQUEST_LINE = re.compile(rb"(?:^|\r\n)([A-Z]+) (\S+) HTTP/1\.[01]\r\n")


def make_ca_and_cert(folder: Path) -> tuple[Path, Path, Path]:
    """``(ca.pem, server.pem, server.key)``: a CA, and a certificate it signed for 127.0.0.1."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hcpsync test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[tuple[str, str]] | None) -> None:
    try:
        while data := await reader.read(65536):
            if log is not None:
                log.extend((m.group(1).decode(), m.group(2).decode()) for m in _REQUEST_LINE.finditer(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _join(client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter], log: list[tuple[str, str]] | None) -> None:
    await asyncio.gather(_pipe(client[0], upstream[1], log), _pipe(upstream[0], client[1], None))


class NetFixtures:
    """Start with :meth:`tls_front` / :meth:`proxy`; :meth:`stop` at the end."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tls_connections = 0
        self.proxy_log: list[tuple[str, str]] = []  # (method, target) of every request the proxy carried
        self._servers: list[asyncio.AbstractServer] = []

    def _call(self, coro: Coroutine[Any, Any, str]) -> str:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def tls_front(self, upstream_url: str, cert: Path, key: Path) -> str:
        """An https:// URL whose connections are decrypted and piped to ``upstream_url`` (http)."""
        up = urlsplit(upstream_url)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.tls_connections += 1
            await _join((reader, writer), await asyncio.open_connection(up.hostname, up.port), None)

        async def start() -> str:
            server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
            self._servers.append(server)
            return f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"

        return self._call(start())

    def proxy(self) -> str:
        """An http:// forward proxy: CONNECT tunnels and absolute-form requests, all logged."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target = head.split(b" ", 2)[:2]
            if method == b"CONNECT":
                self.proxy_log.append(("CONNECT", target.decode()))
                host, port = target.decode().rsplit(":", 1)
                upstream = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await _join((reader, writer), upstream, None)
                return
            url = urlsplit(target.decode())
            upstream = await asyncio.open_connection(url.hostname, url.port or 80)
            self.proxy_log.extend((m.group(1).decode(), m.group(2).decode()) for m in _REQUEST_LINE.finditer(head))
            upstream[1].write(head)
            await _join((reader, writer), upstream, self.proxy_log)

        async def start() -> str:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self._servers.append(server)
            return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

        return self._call(start())

    def stop(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
