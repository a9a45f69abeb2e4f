"""GPU profiles: what a `workloadType` means in GPUs, CPU and memory per replica.

The table below is the default; a cluster admin replaces or extends it with
MODELPORT_GPU_PROFILES (Helm value `gpuProfiles`, see `modelport.settings`). A sized
variant such as `GPU_MEDIUM_4` is its base profile with that many GPUs, CPU and
memory scaled alike, so admins need not list every size.

| profile         | GPUs | GiB per GPU | class (e.g.)            | CPU | memory |
|-----------------|------|-------------|-------------------------|-----|--------|
| CPU             | 0    | -           | CPU only (llama.cpp)    | 4   | 16Gi   |
| GPU_SMALL       | 1    | 16          | T4, L4                  | 4   | 16Gi   |
| GPU_MEDIUM      | 1    | 24          | A10G, L4                | 8   | 32Gi   |
| MULTIGPU_MEDIUM | 4    | 24          | 4 x A10G                | 32  | 128Gi  |
| GPU_LARGE       | 1    | 80          | A100 80GB, H100         | 10  | 120Gi  |
| GPU_XLARGE      | 1    | 141         | H200, B200              | 10  | 120Gi  |

`GPU_LARGE_4`, `GPU_XLARGE_8` and so on are the sized variants. The default node
selector only asks for a GPU node (`nvidia.com/gpu.present`, set by NVIDIA's GPU
feature discovery); an admin whose cluster mixes GPU kinds adds a selector such as
`nvidia.com/gpu.product` per profile so that the GPU memory stated here is the one
the pod gets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from decimal import Decimal

from modelport.settings import GpuProfile

GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
# Sizes offered when suggesting a profile that fits a model (one node's worth at most).
SUGGESTED_SIZES = (1, 2, 4, 8)


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

_SIZED = re.compile(r"^(?P<base>[A-Z][A-Z0-9_]*?)_(?P<count>[1-9][0-9]*)$")
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(\.[0-9]+)?)(?P<suffix>[A-Za-z]*)$")


class UnknownProfileError(LookupError):
    """No profile of that name, sized or not."""


def resolve(workload_type: str, profiles: Mapping[str, GpuProfile]) -> GpuProfile:
    """The profile for `workload_type`, expanding sized variants (`GPU_MEDIUM_4`)."""
    if workload_type in profiles:
        return profiles[workload_type]
    match = _SIZED.match(workload_type)
    if match and match["base"] in profiles:
        base = profiles[match["base"]]
        count = int(match["count"])
        per_gpu = max(base.gpus, 1)
        return GpuProfile(
            gpus=count,
            cpu=_scale(base.cpu, count, per_gpu),
            memory=_scale(base.memory, count, per_gpu),
            node_selector=base.node_selector,
            gpu_memory_gib=base.gpu_memory_gib,
            resource_name=base.resource_name,
            tolerations=base.tolerations,
        )
    raise UnknownProfileError(workload_type)


def smallest_fit(min_gpu_memory_gib: int, profiles: Mapping[str, GpuProfile]) -> str | None:
    """The name of the smallest profile (fewest GPUs, then least memory) whose GPUs hold
    `min_gpu_memory_gib` together, among the table and its sized variants up to 8 GPUs."""
    fits = [
        (profile.gpus, profile.total_gpu_memory_gib, name)
        for name, profile in _candidates(profiles)
        if profile.gpus and profile.total_gpu_memory_gib >= min_gpu_memory_gib
    ]
    return min(fits)[2] if fits else None


def _candidates(profiles: Mapping[str, GpuProfile]) -> Iterator[tuple[str, GpuProfile]]:
    for name, profile in sorted(profiles.items()):
        if not profile.gpu_memory_gib:
            continue  # unknown GPU memory: never suggested
        yield name, profile
        if profile.gpus == 1:
            for count in SUGGESTED_SIZES[1:]:
                sized = f"{name}_{count}"
                if sized not in profiles:
                    yield sized, resolve(sized, profiles)


def _scale(quantity: str, count: int, per: int) -> str:
    """`quantity * count / per`, keeping the unit; unparseable quantities are kept."""
    match = _QUANTITY.match(quantity)
    if not match:
        return quantity
    value = Decimal(match["number"]) * count / per
    text = format(value.normalize(), "f")
    return f"{text}{match['suffix']}"
