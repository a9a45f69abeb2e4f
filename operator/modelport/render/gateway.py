"""The gateway's children: ConfigMap, ServiceAccount, Service, Deployment and HPA of
one endpoint.

The gateway pod reads `gateway.json` from the ConfigMap and each credential (provider
keys, callers' API keys) from a file of one projected volume (`<secretName>/<key>`,
mode 0400, read-only). Secret sources are `optional`, so that a missing Secret leaves
that entity failing, or that API key refused (status says which key), instead of
keeping the whole pod from starting; when the Secret appears, the kubelet fills in the
file and the gateway picks it up without a restart.

When the gateway verifies callers' ServiceAccount tokens it needs an identity of its
own to ask the apiserver (TokenReview): a ServiceAccount per endpoint, whose token is
mounted, and which the operator adds to the ClusterRoleBinding that grants exactly
that. The gateway also gets its own ServiceAccount (its Kubernetes token not mounted)
when it signs with its pod's cloud identity (a Bedrock entity without keys: EKS Pod
Identity associates a role with `<namespace>/<ep>-gateway`) or when the cluster admin
gives gateway ServiceAccounts annotations (MODELPORT_GATEWAY_SERVICE_ACCOUNT_ANNOTATIONS,
e.g. IRSA's `eks.amazonaws.com/role-arn`; `{namespace}` and `{endpoint}` in a value
become the endpoint's). Otherwise the pod runs as the namespace's `default`
ServiceAccount with no token.
"""

from __future__ import annotations

from itertools import groupby

from modelport import gatewayconfig as gc
from modelport.render.config import GUARD_TOKEN_PATH, SecretRef
from modelport.render.manifest import Manifest, OwnerRef, metadata
from modelport.render.names import (
    COMPONENT_LABEL,
    CONFIG_HASH_ANNOTATION,
    GATEWAY,
    endpoint_labels,
    gateway_name,
    gateway_selector,
    gateway_service_account_name,
    service_name,
)
from modelport.settings import Settings

GATEWAY_PORT = 8080
SERVICE_PORT = 80
CONFIG_DIR = "/etc/modelport/config"
SECRETS_DIR = "/var/run/modelport/secrets"
# A non-root UID/GID; fsGroup makes the 0400 secret files group-readable by it
# (the kubelet adds the group read bit for fsGroup-owned volumes).
RUN_AS = 65532
SECRET_FILE_MODE = 0o400
CPU_TARGET_PERCENT = 70


def gateway_children(
    endpoint: str,
    namespace: str,
    owner: OwnerRef,
    config_text: str,
    config_hash: str,
    refs: list[SecretRef],
    settings: Settings,
    *,
    service_account: bool,
    pod_identity: bool = False,
    readiness_role: str | None = None,
    guard_audience: str | None = None,
) -> list[Manifest]:
    """ConfigMap, ServiceAccount, RoleBinding (with `readiness_role`), Service,
    Deployment and HPA of the gateway, in apply order: the ServiceAccount exists before
    pods name it. `service_account`: the gateway talks to the apiserver with its own
    token (it verifies ServiceAccount tokens, or watches EndpointSlices), which is
    mounted; `pod_identity`: it signs with its pod's cloud identity (see the module
    docstring); `readiness_role`: ``ClusterRole/<name>`` or ``Role/<name>``, the role
    that may watch EndpointSlices, bound in this namespace only; `guard_audience`:
    project a token of that audience for calls to a guard ServingEndpoint."""
    labels = {**endpoint_labels(endpoint), COMPONENT_LABEL: GATEWAY}
    name = gateway_name(endpoint)
    annotations = {
        key: value.replace("{namespace}", namespace).replace("{endpoint}", endpoint)
        for key, value in sorted(settings.gateway_service_account_annotations.items())
    }
    own_account = service_account or pod_identity or bool(annotations)
    account = gateway_service_account_name(endpoint) if own_account else None
    children: list[Manifest] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(name, namespace, labels, owner),
            "data": {gc.CONFIG_FILE_NAME: config_text},
        },
    ]
    if account is not None:
        account_metadata = metadata(account, namespace, labels, owner)
        if annotations:
            account_metadata["annotations"] = annotations
        children.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": account_metadata,
                # Only the gateway pods use it, and they ask for the token themselves.
                "automountServiceAccountToken": False,
            }
        )
    if account is not None and readiness_role:
        role_kind, _, role_name = readiness_role.partition("/")
        children.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": metadata(account, namespace, labels, owner),
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": role_kind,
                    "name": role_name,
                },
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            }
        )
    return [
        *children,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(service_name(endpoint), namespace, labels, owner),
            "spec": {
                "type": "ClusterIP",
                "selector": gateway_selector(endpoint),
                "ports": [
                    {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
                ],
            },
        },
        _deployment(
            endpoint,
            namespace,
            owner,
            labels,
            config_hash,
            refs,
            settings,
            account,
            mount_token=service_account,
            guard_audience=guard_audience,
        ),
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(name, namespace, labels, owner),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": settings.gateway_min_replicas,
                "maxReplicas": settings.gateway_max_replicas,
                "metrics": [_cpu_metric(CPU_TARGET_PERCENT)],
            },
        },
    ]


def _cpu_metric(percent: int) -> Manifest:
    return {
        "type": "Resource",
        "resource": {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": percent},
        },
    }


def _deployment(
    endpoint: str,
    namespace: str,
    owner: OwnerRef,
    labels: dict[str, str],
    config_hash: str,
    refs: list[SecretRef],
    settings: Settings,
    account: str | None,
    *,
    mount_token: bool,
    guard_audience: str | None = None,
) -> Manifest:
    name = gateway_name(endpoint)
    selector = gateway_selector(endpoint)
    mounted = [r for r in refs if r.mounted]
    sources = [
        {
            "secret": {
                "name": secret,
                # Missing Secrets must not block the pod: see the module docstring.
                "optional": True,
                "items": [
                    {"key": key, "path": gc.secret_file_path(secret, key)}
                    for key in sorted({r.key for r in group})
                ],
            }
        }
        for secret, group in groupby(mounted, key=lambda r: r.name)
    ]
    if guard_audience is not None:
        # The gateway's credential towards a guard ServingEndpoint: a token of its own
        # ServiceAccount, re-read from this file as the kubelet rotates it.
        sources.append(
            {
                "serviceAccountToken": {
                    "audience": guard_audience,
                    "expirationSeconds": 3600,
                    "path": GUARD_TOKEN_PATH,
                }
            }
        )
    secrets_volume: Manifest = (
        {"name": "secrets", "projected": {"defaultMode": SECRET_FILE_MODE, "sources": sources}}
        if sources
        else {"name": "secrets", "emptyDir": {}}
    )
    probe = {"periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3}
    # Placement is the cluster admin's (MODELPORT_GATEWAY_NODE_SELECTOR/_TOLERATIONS);
    # empty, the scheduler picks any node, and the keys stay out of the manifest.
    placement: Manifest = {}
    if settings.gateway_node_selector:
        placement["nodeSelector"] = dict(sorted(settings.gateway_node_selector.items()))
    if settings.gateway_tolerations:
        placement["tolerations"] = [dict(t) for t in settings.gateway_tolerations]
    # The token is the gateway's credential for TokenReview, so it is mounted only
    # when the gateway verifies ServiceAccount tokens (and then for its own account);
    # IRSA and EKS Pod Identity project tokens of their own audience themselves.
    # "default" is spelled out: left out, the apiserver would keep the old name
    # through the deprecated `serviceAccount` field, and pods would name a pruned
    # ServiceAccount.
    identity: Manifest = {
        "serviceAccountName": account or "default",
        "automountServiceAccountToken": mount_token,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, namespace, labels, owner),
        "spec": {
            # replicas is left to the HPA: setting it here would fight the autoscaler.
            "selector": {"matchLabels": selector},
            "progressDeadlineSeconds": settings.progress_deadline_seconds,
            "revisionHistoryLimit": 3,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": {**labels, **selector},
                    # A changed config file rolls the pods; a rotated Secret does not
                    # need to (the gateway re-reads the files).
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": {
                    **identity,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "fsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": GATEWAY,
                            "image": settings.gateway_image,
                            "command": [
                                "modelport",
                                "gateway",
                                "--config",
                                CONFIG_DIR,
                                "--secrets",
                                SECRETS_DIR,
                            ],
                            "ports": [
                                {"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "http"},
                                **probe,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                **probe,
                                "periodSeconds": 10,
                            },
                            "resources": {
                                part: dict(values)
                                for part, values in settings.gateway_resources.items()
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                                {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a pod's own emptyDir
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": name}},
                        secrets_volume,
                        {"name": "tmp", "emptyDir": {}},
                    ],
                    **placement,
                },
            },
        },
    }
