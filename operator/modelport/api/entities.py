"""Served entities: what an endpoint serves, either an external model or a
self-hosted model run by the operator on the cluster's GPUs (or CPUs).

Self-hosted fields follow the reference service (`entityName`, `entityVersion`,
`workloadType`, `workloadSize`, provisioned concurrency and throughput,
`scaleToZeroEnabled`, `environmentVars`); `task`, `runtime`, `modelCache`,
`hfTokenSecretRef` and `scaleToZeroIdleSeconds` are Modelport extensions for what
Kubernetes needs to know to run the model.

A self-hosted entity is an LLM (catalog name, `hf://`, `pvc://`, `s3://` weights) or a
*custom model* in the MLflow format (task `ml/v1/predict`, engine `mlflow`): a
`models:/` or `runs:/` URI of the cluster's MLflow tracking server, a registered
model's name with `entityVersion`, or an MLflow model directory at `pvc://`/`s3://`
with `runtime.engine: mlflow`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from modelport.api.meta import (
    DNS_SUBDOMAIN,
    NAME,
    SHORT,
    TEXT,
    ApiModel,
    CelRule,
    SecretKeySelector,
    cel_rules,
    list_map,
)
from modelport.api.providers import ExternalModel

ENTITY_NAME = r"^[A-Za-z0-9_-]+$"
# A catalog name (system.ai.meta_llama_v3_1_8b_instruct), a registered MLflow model's
# name (main.default.churn), or a URI of the weights or of an MLflow model.
ENTITY_SOURCE = (
    r"^(hf://[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?"
    r"|models:/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+|@[A-Za-z0-9_-]+)"
    r"|runs:/[A-Za-z0-9]+/[^\s]+"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?"
    r"|s3://[a-z0-9][a-z0-9.-]*(/[^\s]*)?"
    r"|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)$"
)
# CPU, GPU_SMALL … MULTIGPU_MEDIUM and sized variants (GPU_MEDIUM_4); profiles are
# cluster-configurable, so any upper-case name is accepted here and the operator
# reports an unknown one in status.
WORKLOAD_TYPE = r"^[A-Z][A-Z0-9_]*$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

WorkloadSize = Literal["Small", "Medium", "Large"]
Engine = Literal["vllm", "sglang", "llamacpp", "mlflow"]
CUSTOM_TASK = "ml/v1/predict"
"""The task of a custom (MLflow) model: the reference service's invocations API."""
EntityTask = Literal["llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings", "ml/v1/predict"]
# Sources only the MLflow runtime can load (through the cluster's tracking server).
MLFLOW_SCHEMES = ("models:/", "runs:/")
Quantity = Annotated[
    int | str,
    Field(
        json_schema_extra={"x-kubernetes-int-or-string": True},
        description="A Kubernetes quantity, e.g. 8, 16Gi or 500m.",
    ),
]

# Self-hosted-only fields, by camelCase name (checked against externalModel).
SELF_HOSTED_FIELDS = (
    "entityVersion",
    "task",
    "workloadType",
    "workloadSize",
    "minProvisionedConcurrency",
    "maxProvisionedConcurrency",
    "scaleToZeroEnabled",
    "scaleToZeroIdleSeconds",
    "minProvisionedThroughput",
    "maxProvisionedThroughput",
    "environmentVars",
    "runtime",
    "modelCache",
    "hfTokenSecretRef",
)


class EnvironmentVar(ApiModel):
    """An environment variable of the inference pods: a value or a Secret key."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "has(self.value) != has(self.secretKeyRef)",
                "environmentVars[]: set exactly one of value or secretKeyRef",
            )
        )
    )

    name: Annotated[str, Field(min_length=1, max_length=NAME, pattern=ENV_NAME)] = Field(
        description="Name of the variable."
    )
    value: Annotated[str, Field(max_length=TEXT)] | None = Field(
        default=None, description="Literal value. Exclusive with secretKeyRef."
    )
    secret_key_ref: SecretKeySelector | None = Field(
        default=None, description="Take the value from a Secret key. Exclusive with value."
    )

    @model_validator(mode="after")
    def _check_source(self) -> Self:
        if (self.value is None) == (self.secret_key_ref is None):
            raise ValueError("environmentVars[]: set exactly one of value or secretKeyRef")
        return self


class ResourceRequirements(ApiModel):
    """Compute resources of one inference pod, as in a container's `resources`."""

    limits: dict[str, Quantity] | None = Field(
        default=None, max_length=16, description="Upper bounds, e.g. {nvidia.com/gpu: 1}."
    )
    requests: dict[str, Quantity] | None = Field(
        default=None, max_length=16, description="Amounts reserved for scheduling."
    )


class Toleration(ApiModel):
    """A pod toleration, as in a Pod's `spec.tolerations`."""

    key: Annotated[str, Field(max_length=NAME)] | None = Field(
        default=None, description="Taint key; empty with operator Exists matches all."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (the default)."
    )
    value: Annotated[str, Field(max_length=SHORT)] | None = Field(
        default=None, description="Taint value to match with operator Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class Runtime(ApiModel):
    """Modelport extension: how the inference pods of a self-hosted entity run."""

    engine: Engine = Field(
        default="vllm",
        description="Inference server: vllm (the default for LLMs on GPUs), sglang, llamacpp "
        "(the default for LLMs on CPU), or mlflow (MLflow's scoring server, for custom models; "
        "the default for models:/ and runs:/ sources and task ml/v1/predict).",
    )
    image: Annotated[str, Field(max_length=NAME)] | None = Field(
        default=None,
        description="Container image; default: the engine's image pinned by the operator.",
    )
    args: list[Annotated[str, Field(max_length=TEXT)]] | None = Field(
        default=None, max_length=64, description="Extra command-line arguments of the engine."
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Container resources; default: those of the workloadType's GPU profile.",
    )
    node_selector: dict[str, Annotated[str, Field(max_length=SHORT)]] | None = Field(
        default=None, max_length=32, description="Node labels the pods must run on."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=32, description="Taints the pods tolerate (e.g. GPU nodes')."
    )


class ModelCache(ApiModel):
    """Modelport extension: a PersistentVolumeClaim that caches downloaded weights, so a
    restarted or scaled-up pod does not download them again."""

    claim_name: Annotated[str, Field(max_length=NAME, pattern=DNS_SUBDOMAIN)] = Field(
        description="Name of the PersistentVolumeClaim, in the endpoint's namespace."
    )
    sub_path: Annotated[str, Field(max_length=TEXT)] | None = Field(
        default=None, description="Directory inside the volume; default: its root."
    )


SCALE_TO_ZERO_IDLE_MESSAGE = (
    "servedEntities[].scaleToZeroIdleSeconds applies only with scaleToZeroEnabled: true; "
    "enable scale to zero or remove it"
)
_EXCLUSIVE_SIZING = (
    "!has(self.workloadSize) || "
    "!(has(self.minProvisionedConcurrency) || has(self.maxProvisionedConcurrency))"
)


class ServedEntity(ApiModel):
    """One model behind the endpoint: set `externalModel`, or `entityName` for a
    self-hosted model (plus its optional sizing and runtime fields)."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "has(self.externalModel) != has(self.entityName)",
                "servedEntities[]: set exactly one of externalModel (a provider's model) "
                "or entityName (a self-hosted model)",
            ),
            *(
                CelRule(
                    f"!has(self.externalModel) || !has(self.{field})",
                    f"servedEntities[].{field} applies only to self-hosted entities; remove it "
                    "or replace externalModel by entityName",
                    f".{field}",
                )
                for field in SELF_HOSTED_FIELDS
            ),
            CelRule(
                f"!has(self.task) || !has(self.runtime) || !has(self.runtime.engine) || "
                f"(self.task == '{CUSTOM_TASK}') == (self.runtime.engine == 'mlflow')",
                f"servedEntities[].task {CUSTOM_TASK} (a custom model) is served by "
                "runtime.engine mlflow only, and mlflow serves only that task; make them agree",
                ".task",
            ),
            CelRule(
                "!has(self.entityName) || !(self.entityName.startsWith('models:/') || "
                "self.entityName.startsWith('runs:/')) || ((!has(self.runtime) || "
                "!has(self.runtime.engine) || self.runtime.engine == 'mlflow') && "
                f"(!has(self.task) || self.task == '{CUSTOM_TASK}'))",
                "servedEntities[].entityName models:/ and runs:/ are MLflow models: served by "
                f"runtime.engine mlflow with task {CUSTOM_TASK}; remove the other engine or task",
                ".entityName",
            ),
            CelRule(
                _EXCLUSIVE_SIZING,
                "servedEntities[].workloadSize and min/maxProvisionedConcurrency are "
                "mutually exclusive; keep one",
                ".workloadSize",
            ),
            CelRule(
                "!has(self.minProvisionedConcurrency) || !has(self.maxProvisionedConcurrency)"
                " || self.minProvisionedConcurrency <= self.maxProvisionedConcurrency",
                "servedEntities[].minProvisionedConcurrency must be <= "
                "maxProvisionedConcurrency; lower the min or raise the max",
                ".minProvisionedConcurrency",
            ),
            CelRule(
                "!has(self.minProvisionedThroughput) || !has(self.maxProvisionedThroughput)"
                " || self.minProvisionedThroughput <= self.maxProvisionedThroughput",
                "servedEntities[].minProvisionedThroughput must be <= "
                "maxProvisionedThroughput; lower the min or raise the max",
                ".minProvisionedThroughput",
            ),
            CelRule(
                "!has(self.scaleToZeroEnabled) || !self.scaleToZeroEnabled"
                " || !has(self.minProvisionedConcurrency) || self.minProvisionedConcurrency == 0",
                "servedEntities[].minProvisionedConcurrency must be 0 when scaleToZeroEnabled "
                "is true; set it to 0 or disable scale to zero",
                ".minProvisionedConcurrency",
            ),
            CelRule(
                "!has(self.scaleToZeroIdleSeconds) || "
                "(has(self.scaleToZeroEnabled) && self.scaleToZeroEnabled)",
                SCALE_TO_ZERO_IDLE_MESSAGE,
                ".scaleToZeroIdleSeconds",
            ),
        )
    )

    name: Annotated[str, Field(min_length=1, max_length=SHORT, pattern=ENTITY_NAME)] = Field(
        description="Name of the entity in this endpoint, used by trafficConfig.routes and "
        "returned in the served-model-name header: letters, digits, - and _, at most 63."
    )
    external_model: ExternalModel | None = Field(
        default=None,
        description="A model served by an external provider. Exclusive with entityName.",
    )
    entity_name: Annotated[str, Field(max_length=NAME, pattern=ENTITY_SOURCE)] | None = Field(
        default=None,
        description="The self-hosted model: a catalog name such as "
        "system.ai.meta_llama_v3_1_8b_instruct, or hf://org/model, pvc://claim/path, "
        "s3://bucket/path; or a custom MLflow model: models:/name/version, "
        "models:/name@alias, runs:/run-id/path, or the name of a model registered in the "
        "cluster's MLflow tracking server (with entityVersion). Exclusive with externalModel.",
    )
    entity_version: Annotated[str, Field(max_length=SHORT)] | None = Field(
        default=None,
        description="Version of the catalog model (default: the latest), or of the registered "
        "MLflow model that entityName names (required for those).",
    )
    task: EntityTask | None = Field(
        default=None,
        description="Modelport extension, self-hosted only: the API the model serves "
        "(llm/v1/chat, llm/v1/completions, llm/v1/embeddings, or ml/v1/predict for a custom "
        "model queried at /serving-endpoints/<endpoint>/invocations). Unset means the "
        "catalog's task, or ml/v1/predict for an MLflow model; an unset task is compatible "
        "with any other entity's task.",
    )
    workload_type: Annotated[str, Field(max_length=SHORT, pattern=WORKLOAD_TYPE)] | None = Field(
        default=None,
        description="Compute profile: CPU, GPU_SMALL, GPU_MEDIUM, GPU_LARGE, GPU_XLARGE, "
        "MULTIGPU_MEDIUM, or a sized variant such as GPU_MEDIUM_4; profiles are "
        "configured per cluster. Default: the catalog's recommendation.",
    )
    workload_size: WorkloadSize | None = Field(
        default=None,
        description="Concurrency band: Small (4), Medium (16) or Large (64) concurrent "
        "requests. Exclusive with min/maxProvisionedConcurrency; Small if neither is set.",
    )
    min_provisioned_concurrency: Annotated[int, Field(ge=0, le=100000)] | None = Field(
        default=None,
        description="Concurrent requests always provisioned. Exclusive with workloadSize.",
    )
    max_provisioned_concurrency: Annotated[int, Field(ge=1, le=100000)] | None = Field(
        default=None,
        description="Concurrent requests provisioned at most. Exclusive with workloadSize.",
    )
    scale_to_zero_enabled: bool | None = Field(
        default=None,
        description="Scale the inference pods to zero when idle (default false): after "
        "scaleToZeroIdleSeconds without a request the entity has no pod; the gateway holds "
        "the next requests while one starts. The endpoint stays READY meanwhile.",
    )
    scale_to_zero_idle_seconds: Annotated[int, Field(ge=10, le=604800)] | None = Field(
        default=None,
        description="Modelport extension: seconds without a request after which a "
        "scaleToZeroEnabled entity goes to zero replicas, 10 to 604800; default: the "
        "cluster's (Helm autoscaling.scaleToZeroIdleSeconds, 30 minutes).",
    )
    min_provisioned_throughput: Annotated[int, Field(ge=0, le=100000000)] | None = Field(
        default=None, description="Tokens per second always provisioned."
    )
    max_provisioned_throughput: Annotated[int, Field(ge=0, le=100000000)] | None = Field(
        default=None, description="Tokens per second provisioned at most."
    )
    environment_vars: list[EnvironmentVar] | None = Field(
        default=None,
        max_length=64,
        json_schema_extra=list_map("name"),
        description="Environment variables of the inference pods, as a list of "
        "{name, value} or {name, secretKeyRef} (the reference service's map, made safe "
        "for secrets).",
    )
    runtime: Runtime | None = Field(
        default=None,
        description="Modelport extension: inference engine, image, args, resources and "
        "placement of the pods.",
    )
    model_cache: ModelCache | None = Field(
        default=None, description="Modelport extension: a PVC caching the weights."
    )
    hf_token_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="Modelport extension: Secret key holding a Hugging Face token, for "
        "gated hf:// models.",
    )

    @model_validator(mode="after")
    def _check_entity(self) -> Self:
        if (self.external_model is None) == (self.entity_name is None):
            raise ValueError(
                "servedEntities[]: set exactly one of externalModel (a provider's model) "
                "or entityName (a self-hosted model)"
            )
        if self.external_model is not None:
            body = self.model_dump(by_alias=True, exclude_none=True)
            if misplaced := [f for f in SELF_HOSTED_FIELDS if f in body]:
                raise ValueError(
                    f"servedEntities[].{', '.join(misplaced)} applies only to self-hosted "
                    "entities; remove it or replace externalModel by entityName"
                )
        lo, hi = self.min_provisioned_concurrency, self.max_provisioned_concurrency
        if self.workload_size is not None and (lo is not None or hi is not None):
            raise ValueError(
                "servedEntities[].workloadSize and min/maxProvisionedConcurrency are "
                "mutually exclusive; keep one"
            )
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(
                f"servedEntities[].minProvisionedConcurrency ({lo}) must be <= "
                f"maxProvisionedConcurrency ({hi}); lower the min or raise the max"
            )
        tlo, thi = self.min_provisioned_throughput, self.max_provisioned_throughput
        if tlo is not None and thi is not None and tlo > thi:
            raise ValueError(
                f"servedEntities[].minProvisionedThroughput ({tlo}) must be <= "
                f"maxProvisionedThroughput ({thi}); lower the min or raise the max"
            )
        if self.scale_to_zero_enabled and lo:
            raise ValueError(
                "servedEntities[].minProvisionedConcurrency must be 0 when scaleToZeroEnabled "
                "is true; set it to 0 or disable scale to zero"
            )
        if self.scale_to_zero_idle_seconds is not None and not self.scale_to_zero_enabled:
            raise ValueError(SCALE_TO_ZERO_IDLE_MESSAGE)
        self._check_custom_model()
        return self

    def _check_custom_model(self) -> None:
        """A custom (MLflow) model's task, engine and source must agree (as the CEL rules)."""
        engine = self.runtime.engine if self.runtime is not None else None
        engine_set = self.runtime is not None and "engine" in self.runtime.model_fields_set
        if (
            self.task is not None
            and engine_set
            and (self.task == CUSTOM_TASK) != (engine == "mlflow")
        ):
            raise ValueError(
                f"servedEntities[].task {CUSTOM_TASK} (a custom model) is served by "
                "runtime.engine mlflow only, and mlflow serves only that task; make them "
                f"agree (got task {self.task}, engine {engine})"
            )
        if (self.entity_name or "").startswith(MLFLOW_SCHEMES) and (
            (engine_set and engine != "mlflow") or self.task not in (None, CUSTOM_TASK)
        ):
            raise ValueError(
                "servedEntities[].entityName models:/ and runs:/ are MLflow models: served by "
                f"runtime.engine mlflow with task {CUSTOM_TASK}; remove the other engine or task"
            )

    @property
    def effective_task(self) -> EntityTask | None:
        """The entity's task: the external model's, the self-hosted `task`, ml/v1/predict
        for an entity that is an MLflow model by its engine or source (None when left to
        the catalog, which is compatible with any task)."""
        if self.external_model is not None:
            return self.external_model.task
        if self.task is None and self.is_mlflow_model:
            return "ml/v1/predict"
        return self.task

    @property
    def is_mlflow_model(self) -> bool:
        """True when the entity says it is a custom MLflow model: its task, its engine or a
        models:/ or runs:/ source. (A registered model's bare name is known to be one only
        once the catalog has no entry of that name: see the renderer.)"""
        if self.entity_name is None:
            return False
        engine_set = self.runtime is not None and "engine" in self.runtime.model_fields_set
        return (
            self.task == CUSTOM_TASK
            or (engine_set and self.runtime is not None and self.runtime.engine == "mlflow")
            or self.entity_name.startswith(MLFLOW_SCHEMES)
        )

    @property
    def is_self_hosted(self) -> bool:
        """True for a model the operator runs on the cluster."""
        return self.entity_name is not None
