"""What each operation of the API asks Kubernetes RBAC, as a SubjectAccessReview.

The server authenticates a caller (``modelport.restapi.auth``), then asks the apiserver
whether *that caller* may do the operation's verb on the endpoint, and only then does it
with its own ServiceAccount's rights. The mapping is the natural one, so a Role written
for ``kubectl`` users grants the same through this API:

=====================================  ==========================================
operation                              RBAC (group serving.modelport.io)
=====================================  ==========================================
list                                   list servingendpoints
get, openapi, metrics                  get servingendpoints <name>
create                                 create servingendpoints
config, ai-gateway, rate-limits, tags  update servingendpoints <name>
delete                                 delete servingendpoints <name>
invocations                            create servingendpoints/invocations <name>
served model logs                      get pods/log (core group) in the namespace
=====================================  ==========================================

``servingendpoints/invocations`` is a subresource that exists only in RBAC rules (the
apiserver serves no such path; RBAC evaluates any subresource a review names): it lets
a Role grant querying apart from managing, as ``services/proxy`` does for Services.
``create`` carries no name, as for any create: RBAC's ``resourceNames`` cannot restrict
it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from modelport.api import GROUP, PLURAL
from modelport.gateway.context import Principal

INVOCATIONS = "invocations"


@dataclass(frozen=True, slots=True)
class Access:
    """The RBAC attributes of one request."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    name: str = ""

    def describe(self, namespace: str) -> str:
        """In kubectl's words, for messages: ``update servingendpoints/chat in team-a``."""
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        target = f"{resource} '{self.name}'" if self.name else resource
        group = f" (API group {self.group})" if self.group else ""
        return f"{self.verb} {target}{group} in namespace {namespace}"


class Operation(Enum):
    """What a request does."""

    LIST = "list"
    GET = "get"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    INVOKE = "invoke"
    READ_LOGS = "read-logs"

    def access(self, name: str = "") -> Access:
        """The RBAC attributes of this operation on endpoint ``name``."""
        if self is Operation.INVOKE:
            return Access("create", GROUP, PLURAL, INVOCATIONS, name)
        if self is Operation.READ_LOGS:
            return Access("get", "", "pods", "log")
        if self in (Operation.LIST, Operation.CREATE):
            return Access(self.value, GROUP, PLURAL)
        return Access(self.value, GROUP, PLURAL, name=name)


def review(principal: Principal, namespace: str, access: Access) -> dict[str, Any]:
    """The SubjectAccessReview asking whether ``principal`` may ``access`` in ``namespace``."""
    attributes: dict[str, Any] = {
        "namespace": namespace,
        "verb": access.verb,
        "group": access.group,
        "resource": access.resource,
    }
    if access.subresource:
        attributes["subresource"] = access.subresource
    if access.name:
        attributes["name"] = access.name
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": principal.name,
            "groups": list(principal.groups),
            "resourceAttributes": attributes,
        },
    }
