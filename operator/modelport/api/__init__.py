"""The `ServingEndpoint` API: pydantic models that are the single source of truth.

The CRD in `crds/` is generated from these models (`modelport crds`) and a test
fails when it drifts. Import the public names from here.
"""

from modelport.api.v1alpha1 import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    ServingEndpoint,
    ServingEndpointSpec,
    ServingEndpointStatus,
    format_errors,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "ServingEndpoint",
    "ServingEndpointSpec",
    "ServingEndpointStatus",
    "format_errors",
]
