"""GPU profiles: what a `workloadType` means in GPUs, CPU and memory per replica.

The table below is a simple default; a cluster admin replaces or extends it with
MODELPORT_GPU_PROFILES (see `modelport.settings`). A sized variant such as
`GPU_MEDIUM_4` is its base profile with that many GPUs, CPU and memory scaled
alike, so admins need not list every size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from modelport.settings import GpuProfile

GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}

DEFAULT_PROFILES: Mapping[str, GpuProfile] = {
    "CPU": GpuProfile(gpus=0, cpu="4", memory="16Gi"),
    "GPU_SMALL": GpuProfile(gpus=1, cpu="4", memory="16Gi", node_selector=GPU_NODE_SELECTOR),
    "GPU_MEDIUM": GpuProfile(gpus=1, cpu="8", memory="32Gi", node_selector=GPU_NODE_SELECTOR),
    "GPU_LARGE": GpuProfile(gpus=2, cpu="16", memory="64Gi", node_selector=GPU_NODE_SELECTOR),
    "GPU_XLARGE": GpuProfile(gpus=8, cpu="64", memory="512Gi", node_selector=GPU_NODE_SELECTOR),
    "MULTIGPU_MEDIUM": GpuProfile(
        gpus=4, cpu="32", memory="128Gi", node_selector=GPU_NODE_SELECTOR
    ),
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
        )
    raise UnknownProfileError(workload_type)


def _scale(quantity: str, count: int, per: int) -> str:
    """`quantity * count / per`, keeping the unit; unparseable quantities are kept."""
    match = _QUANTITY.match(quantity)
    if not match:
        return quantity
    value = Decimal(match["number"]) * count / per
    text = format(value.normalize(), "f")
    return f"{text}{match['suffix']}"
