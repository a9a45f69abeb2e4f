"""SGLang's server (`python3 -m sglang.launch_server`), OpenAI-compatible.

    python3 -m sglang.launch_server --model-path <model> --served-model-name <entity>
        --host 0.0.0.0 --port 8000 [--tp N] [--context-length L]
        [--trust-remote-code] [--is-embedding] --enable-metrics

Health on /health, Prometheus metrics on /metrics once --enable-metrics is given.
"""

from __future__ import annotations

from modelport.runtimes.base import (
    LISTEN_HOST,
    InferenceRuntime,
    ModelPlan,
    UnsupportedModelError,
)


class Sglang(InferenceRuntime):
    """SGLang (`lmsysorg/sglang`)."""

    engine = "sglang"
    container_name = "sglang"
    health_path = "/health"
    metrics_path = "/metrics"

    def command(self, plan: ModelPlan) -> list[str]:
        del plan
        return ["python3", "-m", "sglang.launch_server"]

    def args(self, plan: ModelPlan) -> list[str]:
        if plan.source.startswith("s3://"):
            raise UnsupportedModelError(
                "the sglang engine cannot load s3:// weights; use runtime.engine vllm, or "
                "copy the weights to a PVC and use pvc://claim/path"
            )
        args = [
            "--model-path",
            plan.source,
            "--served-model-name",
            plan.served_name,
            "--host",
            LISTEN_HOST,
            "--port",
            str(plan.port),
        ]
        if plan.gpus > 1:
            args += ["--tp", str(plan.gpus)]
        if plan.context_length is not None:
            args += ["--context-length", str(plan.context_length)]
        if plan.trust_remote_code:
            args.append("--trust-remote-code")
        if plan.embeddings:
            args.append("--is-embedding")
        args.append("--enable-metrics")
        return args
