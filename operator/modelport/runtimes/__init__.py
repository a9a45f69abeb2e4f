"""Self-hosted models: the inference runtimes and the model catalog.

One module per runtime (`vllm`, `sglang`, `llamacpp`, and `mlflow` for custom models),
each an `InferenceRuntime` (see `base`); `RUNTIMES` maps the API's `runtime.engine` to
it.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelport.runtimes.base import InferenceRuntime
from modelport.runtimes.llamacpp import LlamaCpp
from modelport.runtimes.mlflow import Mlflow
from modelport.runtimes.sglang import Sglang
from modelport.runtimes.vllm import Vllm

RUNTIMES: Mapping[str, InferenceRuntime] = {
    runtime.engine: runtime for runtime in (Vllm(), Sglang(), LlamaCpp(), Mlflow())
}

__all__ = ["RUNTIMES", "InferenceRuntime"]
