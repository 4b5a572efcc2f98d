"""GPU support: decide from the mode and the gpu-probe result, and what a lab then gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# What Docker's API takes for "all GPUs" (docker run --gpus all).
ALL_GPUS = {"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}
NVIDIA_ENV = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}


@dataclass(frozen=True)
class GpuDecision:
    mode: str  # auto | on | off, as asked
    enabled: bool
    reason: str
    probe: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "enabled": self.enabled, "reason": self.reason, "probe": self.probe}


def decide(mode: str, probe: dict[str, Any] | None) -> GpuDecision:
    """on and off are taken as said; auto enables GPUs only when the probe found at least one."""
    if mode == "off":
        return GpuDecision(mode, False, "GPU support is off", probe)
    if mode == "on":
        return GpuDecision(mode, True, "GPU support is on: every lab gets all GPUs", probe)
    if mode != "auto":
        raise ValueError(f"GPU mode must be auto, on or off, got {mode!r}")
    if probe is None:
        return GpuDecision(mode, False, "no probe result (start the stack with `invoke up`)", None)
    gpus = probe.get("gpus") or []
    if gpus:
        names = ", ".join(str(g.get("name", "?")) for g in gpus)
        return GpuDecision(mode, True, f"probe found {len(gpus)} GPU(s): {names}", probe)
    return GpuDecision(mode, False, f"probe found no GPU: {probe.get('reason') or 'no reason given'}", probe)


def lab_gpu_options(decision: GpuDecision) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(device_requests for the lab's host config, environment for the lab)."""
    if not decision.enabled:
        return [], {}
    return [dict(ALL_GPUS)], dict(NVIDIA_ENV)
