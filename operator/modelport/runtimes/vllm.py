"""vLLM's OpenAI-compatible server: the default runtime, for chat, completions and
embeddings on GPUs.

    vllm serve <model> --served-model-name <entity> --host 0.0.0.0 --port 8000
        [--tensor-parallel-size N] [--max-model-len L] [--trust-remote-code]
        [--runner pooling [--override-pooler-config {"normalize": false}]]
        [--load-format runai_streamer]   # s3:// weights

Health on /health, Prometheus metrics on /metrics (same port).
"""

from __future__ import annotations

import json

from modelport.runtimes.base import LISTEN_HOST, InferenceRuntime, Manifest, ModelPlan


class Vllm(InferenceRuntime):
    """vLLM (`vllm/vllm-openai`)."""

    engine = "vllm"
    container_name = "vllm"
    health_path = "/health"
    metrics_path = "/metrics"
    supports_s3 = True

    def command(self, plan: ModelPlan) -> list[str]:
        return ["vllm", "serve", plan.source]

    def args(self, plan: ModelPlan) -> list[str]:
        args = [
            "--served-model-name",
            plan.served_name,
            "--host",
            LISTEN_HOST,
            "--port",
            str(plan.port),
        ]
        if plan.gpus > 1:
            args += ["--tensor-parallel-size", str(plan.gpus)]
        if plan.context_length is not None:
            args += ["--max-model-len", str(plan.context_length)]
        if plan.trust_remote_code:
            args.append("--trust-remote-code")
        if plan.source.startswith("s3://"):
            # Streams safetensors straight from object storage (credentials from the
            # AWS_* variables of environmentVars).
            args += ["--load-format", "runai_streamer"]
        if plan.embeddings:
            args += ["--runner", "pooling"]
            if plan.normalize_embeddings is not None:
                pooler = {"normalize": plan.normalize_embeddings}
                args += ["--override-pooler-config", json.dumps(pooler, separators=(",", ":"))]
        return args

    def env(self, plan: ModelPlan) -> list[Manifest]:
        # Its compile caches go under the pod's writable /tmp (the image's HOME is
        # /root, which a non-root user cannot write).
        del plan
        return [{"name": "VLLM_CACHE_ROOT", "value": "/tmp/vllm"}]  # noqa: S108
