"""Helm values of the self-hosted models (`catalog`, `gpuProfiles`, `inference`) reach
the operator: rendered by the pinned helm, read back by the operator's own parsers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelport.render.profiles import resolve
from modelport.settings import from_env
from tests.unit.test_chart import CHART, helm

EXTRA_MODEL = {
    "name": "qwen2_5_7b_instruct",
    "aliases": ["qwen-7b"],
    "huggingFaceRepo": "Qwen/Qwen2.5-7B-Instruct",
    "task": "llm/v1/chat",
    "contextLength": 32768,
    "minGpuMemoryGiB": 24,
    "tensorParallelSize": 1,
    "defaultWorkloadType": "GPU_MEDIUM",
    "tokensPerSecondPerReplica": 2500,
    "args": {"vllm": ["--enable-prefix-caching"]},
}
PROFILES = {
    "GPU_LARGE": {
        "gpus": 1,
        "gpuMemoryGiB": 80,
        "cpu": "12",
        "memory": "100Gi",
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
    }
}


def template_json(**values: Any) -> list[dict[str, Any]]:
    args = [helm(), "template", "mp", str(CHART), "--namespace", "modelport-system"]
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def operator_env(docs: list[dict[str, Any]], tmp_path: Path) -> dict[str, str]:
    """The operator container's MODELPORT_* variables, with the settings ConfigMap's
    files laid out where its @paths point."""
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in e
    }
    for name, text in config["data"].items():
        (tmp_path / name).write_text(text)
    return {k: v.replace("@/etc/modelport/settings/", f"@{tmp_path}/") for k, v in env.items()}


def test_catalog_and_profiles_values_reach_the_operator(tmp_path: Path) -> None:
    docs = template_json(catalog=[EXTRA_MODEL], gpuProfiles=PROFILES)
    env = operator_env(docs, tmp_path)
    assert env["MODELPORT_CATALOG"] == f"@{tmp_path}/catalog.json"
    settings = from_env(env)
    entry = settings.catalog.resolve("qwen-7b")
    assert entry is not None and entry.catalog_name == "system.ai.qwen2_5_7b_instruct"
    assert settings.catalog.resolve("system.ai.meta_llama_v3_1_8b_instruct") is not None
    large4 = resolve("GPU_LARGE_4", settings.gpu_profiles)
    assert (large4.gpus, large4.gpu_memory_gib, large4.cpu, large4.memory) == (4, 80, "48", "400Gi")
    assert large4.tolerations == ({"key": "gpu", "operator": "Exists"},)


def test_defaults_give_the_builtin_catalog(tmp_path: Path) -> None:
    settings = from_env(operator_env(template_json(), tmp_path))
    assert settings.catalog.resolve("databricks-bge-large-en") is not None
    assert settings.startup_seconds == 1800
    assert settings.vllm_image.startswith("vllm/vllm-openai:")


def test_inference_images_and_startup(tmp_path: Path) -> None:
    docs = template_json(
        inference={"vllmImage": "reg/vllm:1", "llamacppImage": "reg/llama:2", "startupSeconds": 600}
    )
    settings = from_env(operator_env(docs, tmp_path))
    assert (settings.vllm_image, settings.llamacpp_image, settings.startup_seconds) == (
        "reg/vllm:1",
        "reg/llama:2",
        600,
    )


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"catalog": [{"name": "Bad Name"}]}, "catalog"),
        ({"gpuProfiles": {"GPU_X": {"gpus": 1}}}, "GPU_X"),
        ({"gpuProfiles": {"GPU_X": {"gpus": 1, "cpu": "1", "memory": "1Gi", "vram": 3}}}, "vram"),
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], complaint: str) -> None:
    args = [helm(), "template", "mp", str(CHART)]
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode != 0 and complaint in out.stderr, out.stderr
