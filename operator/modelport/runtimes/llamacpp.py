"""llama.cpp through llama-cpp-python's OpenAI-compatible server, for CPU workload
types and small GGUF models.

    python3 -m llama_cpp.server --model <file.gguf> [--hf_model_repo_id <repo>]
        --model_alias <entity> --host 0.0.0.0 --port 8000 [--n_ctx L]
        [--n_gpu_layers -1] [--embedding true]

One server serves either chat/completions or embeddings (`--embedding true`), so an
embeddings entity is its own Deployment. The server has no health route and no
metrics: readiness asks /v1/models, which answers once the weights are loaded.
llama.cpp returns embeddings as the model pools them (not normalised). A chat
model's GGUF names no pooling, so serving it for embeddings needs one, e.g.
`runtime.args: [--kv_overrides, llama.pooling_type=int:1]` (mean pooling; the key
starts with the GGUF's architecture).
"""

from __future__ import annotations

from modelport.runtimes.base import (
    LISTEN_HOST,
    InferenceRuntime,
    ModelPlan,
    UnsupportedModelError,
)

# The quantisation taken from a GGUF repository when neither the catalog nor the
# user names a file.
DEFAULT_GGUF_GLOB = "*Q4_K_M.gguf"


class LlamaCpp(InferenceRuntime):
    """llama-cpp-python's server (`llama_cpp.server`)."""

    engine = "llamacpp"
    container_name = "llamacpp"
    health_path = "/v1/models"

    def command(self, plan: ModelPlan) -> list[str]:
        del plan
        return ["python3", "-m", "llama_cpp.server"]

    def args(self, plan: ModelPlan) -> list[str]:
        if plan.source.startswith("s3://"):
            raise UnsupportedModelError(
                "the llamacpp engine cannot load s3:// weights; copy the GGUF file to a PVC "
                "and use pvc://claim/path/model.gguf"
            )
        if plan.local:
            args = ["--model", plan.source]
        else:
            # A Hugging Face repository of GGUF files: one file (or glob) of it.
            args = [
                "--model",
                plan.gguf_file or DEFAULT_GGUF_GLOB,
                "--hf_model_repo_id",
                plan.source,
            ]
        args += [
            "--model_alias",
            plan.served_name,
            "--host",
            LISTEN_HOST,
            "--port",
            str(plan.port),
        ]
        if plan.context_length is not None:
            args += ["--n_ctx", str(plan.context_length)]
        if plan.gpus:
            args += ["--n_gpu_layers", "-1"]  # every layer on the GPU
        if plan.embeddings:
            args += ["--embedding", "true"]
        return args
