"""GPU profiles: what a `workloadType` means in GPUs, CPU and memory per replica.

A leaf module (nothing of ours imported): the types and the built-in table are read
by `modelport.settings` (which lets an admin replace or extend the table with
MODELPORT_GPU_PROFILES, Helm value `gpuProfiles`) and by `modelport.render.profiles`
(which resolves a profile name, sized variants included, for rendering).

| profile         | GPUs | GiB per GPU | class (e.g.)            | CPU | memory |
|-----------------|------|-------------|-------------------------|-----|--------|
| CPU             | 0    | -           | CPU only (llama.cpp)    | 4   | 16Gi   |
| GPU_SMALL       | 1    | 16          | T4, L4                  | 4   | 16Gi   |
| GPU_MEDIUM      | 1    | 24          | A10G, L4                | 8   | 32Gi   |
| MULTIGPU_MEDIUM | 4    | 24          | 4 x A10G                | 32  | 128Gi  |
| GPU_LARGE       | 1    | 80          | A100 80GB, H100         | 10  | 120Gi  |
| GPU_XLARGE      | 1    | 141         | H200, B200              | 10  | 120Gi  |

The default node selector only asks for a GPU node (`nvidia.com/gpu.present`, set by
NVIDIA's GPU feature discovery); an admin whose cluster mixes GPU kinds adds a
selector such as `nvidia.com/gpu.product` per profile so that the GPU memory stated
here is the one the pod gets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}


@dataclass(frozen=True)
class GpuProfile:
    """The compute one replica of a workloadType gets.

    `gpu_memory_gib` is the memory of one GPU, for the check that a catalog model
    fits (0: unknown, nothing is checked); `tolerations` default to tolerating the
    taint named like the GPU resource (`nvidia.com/gpu`) when the profile has GPUs.
    """

    gpus: int
    cpu: str
    memory: str
    node_selector: Mapping[str, str] = field(default_factory=dict)
    gpu_memory_gib: int = 0
    resource_name: str = DEFAULT_GPU_RESOURCE
    tolerations: tuple[Mapping[str, Any], ...] | None = None

    @property
    def total_gpu_memory_gib(self) -> int:
        """GPU memory of one replica, all GPUs together."""
        return self.gpus * self.gpu_memory_gib


def _gpu(gpus: int, gib: int, cpu: str, memory: str) -> GpuProfile:
    return GpuProfile(
        gpus=gpus, cpu=cpu, memory=memory, node_selector=GPU_NODE_SELECTOR, gpu_memory_gib=gib
    )


DEFAULT_PROFILES: Mapping[str, GpuProfile] = {
    "CPU": GpuProfile(gpus=0, cpu="4", memory="16Gi"),
    "GPU_SMALL": _gpu(1, 16, "4", "16Gi"),
    "GPU_MEDIUM": _gpu(1, 24, "8", "32Gi"),
    "MULTIGPU_MEDIUM": _gpu(4, 24, "32", "128Gi"),
    "GPU_LARGE": _gpu(1, 80, "10", "120Gi"),
    "GPU_XLARGE": _gpu(1, 141, "10", "120Gi"),
}
