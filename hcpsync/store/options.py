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
