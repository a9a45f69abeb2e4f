"""Which namespace a request is for: the reference service's "workspace".

A workspace of the service is a namespace here. A client names it, in this order:

1. in the URL: ``<server>/workspaces/<namespace>/api/2.0/…`` — give the SDKs
   ``host=<server>/workspaces/<namespace>`` (they keep a host's path);
2. in the header ``X-Databricks-Workspace-Id`` (what the SDK sends for
   ``workspace_id=``/``DATABRICKS_WORKSPACE_ID``) or ``X-Databricks-Org-Id`` (MLflow's);
3. else the server's default workspace (``--default-workspace``), if it has one.

A URL and a header that disagree are refused rather than guessed between. Only the
namespaces the server serves (the operator's) are workspaces: anything else is a 404
(which does not list the others: callers need not learn other teams' namespaces).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from modelport.restapi.errors import RESOURCE_DOES_NOT_EXIST, ApiError, invalid

WORKSPACE_HEADERS = ("x-databricks-workspace-id", "x-databricks-org-id")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def resolve(
    from_path: str | None,
    headers: Mapping[str, str],
    *,
    default: str | None,
    served: frozenset[str],
) -> str:
    """The namespace of a request; ``served`` empty means every namespace. Raises ApiError."""
    named = [(h, v.strip()) for h in WORKSPACE_HEADERS if (v := headers.get(h, "").strip())]
    if from_path is not None:
        for header, value in named:
            if value != from_path:
                raise invalid(
                    f"the URL names workspace '{from_path}' but header {header} names "
                    f"'{value}'; drop the header or make them agree"
                )
        workspace = from_path
    elif named:
        workspace = named[0][1]
    elif default:
        workspace = default
    else:
        raise invalid(
            "no workspace named: use <server>/workspaces/<namespace> as the host, or send "
            "X-Databricks-Workspace-Id: <namespace> (this server has no default workspace)"
        )
    if not _NAMESPACE.match(workspace) or len(workspace) > 63:
        raise invalid(f"workspace '{workspace}' is not a Kubernetes namespace name")
    if served and workspace not in served:
        raise ApiError(
            404,
            RESOURCE_DOES_NOT_EXIST,
            f"workspace '{workspace}' is not served here: its namespace is not one the "
            "Modelport operator watches (Helm value watchNamespaces)",
        )
    return workspace
