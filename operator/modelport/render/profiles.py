"""Resolving a `workloadType` to its GPU profile (`modelport.gpuprofiles`, the table an
admin may extend with MODELPORT_GPU_PROFILES): a sized variant such as `GPU_MEDIUM_4`
is its base profile with that many GPUs, CPU and memory scaled alike, so admins need
not list every size; and the smallest profile whose GPUs hold a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from modelport.gpuprofiles import GpuProfile
from modelport.objects import scale_quantity

# Sizes offered when suggesting a profile that fits a model (one node's worth at most).
SUGGESTED_SIZES = (1, 2, 4, 8)


_SIZED = re.compile(r"^(?P<base>[A-Z][A-Z0-9_]*?)_(?P<count>[1-9][0-9]*)$")


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
            cpu=scale_quantity(base.cpu, count, per_gpu),
            memory=scale_quantity(base.memory, count, per_gpu),
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
