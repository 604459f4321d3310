"""Where and how to reach S3: :class:`StorageOptions` (no network code: cheap to import)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class StorageOptions:
    """Where and how to reach S3.  Credentials come from the standard AWS chain."""

    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    no_sign_request: bool = False
    request_payer: bool = False
    #: a PEM file of CA certificates to trust (default: $AWS_CA_BUNDLE, the profile's ca_bundle, the usual CAs)
    ca_bundle: str | None = None
    verify_ssl: bool = True

    def resolved_endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")

    def needs_botocore(self) -> bool:
        """Whether requests need botocore's session (credentials, the profile's region and CA bundle) and
        signer: all but anonymous requests to a plain-HTTP endpoint (no keys, no TLS, no region to find)."""
        return not (self.no_sign_request and not self.profile and is_plain_http(self.resolved_endpoint()))


def is_plain_http(endpoint: str | None) -> bool:
    return bool(endpoint) and str(endpoint).lower().startswith("http://")
