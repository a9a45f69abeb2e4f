"""The pod's own AWS identity, for Bedrock entities configured without access keys.

botocore's default credential chain finds it, in its documented order: environment
variables, the web-identity token file (IRSA: ``AWS_ROLE_ARN`` and
``AWS_WEB_IDENTITY_TOKEN_FILE``, which EKS injects into pods of an annotated
ServiceAccount; ``AWS_ENDPOINT_URL_STS`` moves the STS endpoint), the shared config
files, the container credential endpoint (EKS Pod Identity, ECS) and the instance
metadata service (the node's role). Temporary credentials are refreshed by botocore
before they expire (from 15 minutes before).

botocore does that I/O with blocking calls, so the chain is walked, and expiring
credentials refreshed, in a worker thread; in between, each request takes the cached
credentials without leaving the event loop. Credentials are resolved per region, the
region an STS call is made in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from botocore.credentials import (
    Credentials,
    RefreshableCredentials,
    create_credential_resolver,
)
from botocore.exceptions import BotoCoreError, ClientError
from botocore.session import Session

from modelport.gateway.errors import PERMISSION_DENIED, GatewayError

log = logging.getLogger("modelport.gateway")
T = TypeVar("T")


class AwsIdentity:
    """Credentials of the pod's AWS identity, resolved once per region and kept fresh."""

    def __init__(self) -> None:
        self._credentials: dict[str, Credentials] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def secrets(self, region: str, entity: str) -> dict[str, str]:
        """The credentials as an entity's secrets (``awsAccessKeyId``,
        ``awsSecretAccessKey``, ``awsSessionToken``), fresh enough to sign with."""
        credentials = self._credentials.get(region) or await self._resolve(region, entity)
        if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
            frozen = await asyncio.to_thread(_guarded, entity, credentials.get_frozen_credentials)
        else:
            frozen = credentials.get_frozen_credentials()
        out = {"awsAccessKeyId": frozen.access_key, "awsSecretAccessKey": frozen.secret_key}
        if frozen.token:
            out["awsSessionToken"] = frozen.token
        return out

    async def _resolve(self, region: str, entity: str) -> Credentials:
        # One walk of the chain per region, however many requests arrive meanwhile. A
        # failed walk is not cached: the identity may appear (a token file mounted late).
        async with self._locks.setdefault(region, asyncio.Lock()):
            credentials = self._credentials.get(region)
            if credentials is None:
                credentials = await asyncio.to_thread(_guarded, entity, partial(_resolve, region))
                self._credentials[region] = credentials
            return credentials


def _resolve(region: str) -> Credentials:
    resolver = create_credential_resolver(Session(), region_name=region)
    credentials = resolver.load_credentials()
    if credentials is None:
        raise _NoIdentityError
    return credentials


class _NoIdentityError(Exception):
    pass


def _guarded(entity: str, work: Callable[[], T]) -> T:
    """Run ``work`` (in a worker thread), turning botocore's failures into a 502 that says
    what to fix; botocore's messages name no secret (they carry STS's error codes)."""
    try:
        return work()
    except _NoIdentityError:
        raise GatewayError(
            502,
            PERMISSION_DENIED,
            f"served entity {entity!r} has no AWS access keys and the gateway's pod has no "
            "AWS identity: annotate the gateway's ServiceAccount for IRSA (the chart's "
            "gateway.serviceAccount.annotations), associate it with EKS Pod Identity, or "
            "set amazonBedrockConfig.awsAccessKeyId and awsSecretAccessKey",
        ) from None
    except (BotoCoreError, ClientError, OSError, ValueError) as exc:
        log.warning("AWS credentials for entity=%s failed: %s", entity, type(exc).__name__)
        raise GatewayError(
            502,
            PERMISSION_DENIED,
            f"could not obtain AWS credentials from the pod's identity for served entity "
            f"{entity!r}: {type(exc).__name__}: {str(exc)[:300]}",
        ) from None
