"""One error hierarchy for hcpsync.

Everything hcpsync raises derives from :class:`HcpsyncError`.  S3, botocore and aiohttp
exceptions are translated into these classes at the storage boundary
(:mod:`hcpsync.store.errors`), so the rest of the engine never sees a transport exception.

Each class carries ``exit_code`` (what the CLI exits with when it ends a run) and
``retryable`` (whether the transfer pool may try again).
"""

from __future__ import annotations


class HcpsyncError(Exception):
    """Base of every hcpsync error.  ``str(err)`` is a one-line, user-facing message."""

    exit_code: int = 1
    retryable: bool = False


# --- bad usage or input (exit 2) ---------------------------------------------------------


class UsageError(HcpsyncError):
    """Invalid arguments or configuration values."""

    exit_code = 2


class SelectionError(UsageError):
    """A selection is malformed or matches nothing (unknown subject, empty path...)."""


class UnsafePathError(HcpsyncError):
    """An S3 key or manifest URI would map outside the destination, or is not a valid path."""


class DestinationError(UsageError):
    """The destination folder is missing, not a folder, or not writable."""


# --- storage (S3) errors ------------------------------------------------------------------


class StorageError(HcpsyncError):
    """An S3 request failed."""


class NoSuchBucketError(StorageError):
    exit_code = 2


class NoSuchKeyError(StorageError):
    pass


class AccessDeniedError(StorageError):
    exit_code = 2


class CredentialsError(StorageError):
    exit_code = 2


class EndpointError(StorageError):
    """The endpoint could not be reached at all (connection refused, DNS)."""

    exit_code = 2
    retryable = True


class NotS3Error(StorageError):
    """The endpoint answered, but not as an S3 API does (a 404 without an S3 error code): a wrong --endpoint-url."""

    exit_code = 2


class CertificateError(StorageError):
    """The TLS handshake with the endpoint failed, most often its certificate could not be verified
    (``--ca-bundle``, ``--no-verify-ssl``): another try would not mend it."""

    exit_code = 2


class ThrottledError(StorageError):
    """S3 asked us to slow down (503 SlowDown)."""

    retryable = True


class TransientError(StorageError):
    """5xx, connection reset, timeout, truncated body: worth another try."""

    retryable = True


class ShortReadError(TransientError):
    """A body ended before the bytes its headers promised."""


class ObjectChangedError(StorageError):
    """The object's ETag, size or range no longer match the plan (412 on an If-Match GET)."""


class RangeMismatchError(TransientError):
    """The server answered a different Content-Range than the one asked for."""


class BadResponseError(StorageError):
    """The server's answer breaks the S3 protocol in a way another try would not mend: a listing
    whose continuation token loops or is missing, a body without Content-Length, compressed in
    transit or under a weak ETag (a proxy, not the stored bytes)."""


class RedirectError(StorageError):
    """The endpoint redirected a request (301/307): the bucket is served by another endpoint."""

    exit_code = 2


# --- local side ---------------------------------------------------------------------------


class LocalIOError(HcpsyncError):
    """Writing or renaming a local file failed."""


class DiskFullError(LocalIOError):
    """No space left on the destination's file system; the run stops."""


class JournalError(HcpsyncError):
    """The journal cannot be opened or is damaged."""

    exit_code = 2


class LockedError(HcpsyncError):
    """Another hcpsync process holds the destination's lock."""

    exit_code = 2


class ManifestError(HcpsyncError):
    """A ``.xdlm`` manifest is malformed."""


class VerificationError(HcpsyncError):
    """A file's checksum does not match its manifest."""

    retryable = True


class EtagMismatchError(VerificationError):
    """A file's MD5 differs from its S3 ETag (no manifest lists it): a weaker signal than a
    manifest's, since an ETag is not always an MD5; fetched again once at most."""
