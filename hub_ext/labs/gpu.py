"""GPU support: decide from the mode and the gpu-probe result, hand GPUs out to labs, and what a lab then gets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# What Docker's API takes for "all GPUs" (docker run --gpus all).
ALL_GPUS = {"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}
NVIDIA_CAPABILITIES = "compute,utility"
NVIDIA_ENV = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": NVIDIA_CAPABILITIES}


@dataclass(frozen=True)
class GpuDecision:
    mode: str  # auto | on | off, as asked
    enabled: bool
    reason: str
    probe: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "enabled": self.enabled, "reason": self.reason, "probe": self.probe}

    def devices(self) -> list[str]:
        """The host's GPUs by index, as the probe found them ("0", "1", ...); empty when unknown (mode on, no
        probe): then GPUs cannot be handed out one by one, only all of them."""
        return [str(gpu["index"]) for gpu in (self.probe or {}).get("gpus") or [] if "index" in gpu]


class NoFreeGpu(RuntimeError):
    """No GPU is free for a lab whose policy grants some: one line for the spawn page."""


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


def allocate(wanted: int | str | None, decision: GpuDecision, held: Iterable[str]) -> list[str] | str | None:
    """The GPUs a lab gets, from its policy's `gpus`: None or 0 -> none; "all" -> "all" (shared, as before group
    policies); a count -> that many of the host's GPUs that no running lab holds (`held`), lowest index first.
    Raises NoFreeGpu when fewer are free, naming who may free one."""
    if not decision.enabled or wanted in (None, 0):
        return None
    if wanted == "all":
        return "all"
    devices = decision.devices()
    if not devices:
        return "all"  # GPU support forced on with no probe: the runtime decides, as before
    busy = set(held)
    free = [device for device in devices if device not in busy]
    if len(free) < int(wanted):
        raise NoFreeGpu(
            f"no GPU is free: your lab needs {wanted}, {len(free)} of the host's {len(devices)} are free (the others "
            "are held by running labs); try again later, or ask an admin to stop a lab that holds one"
        )
    return free[: int(wanted)]


def lab_gpu_options(devices: list[str] | str | None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(device_requests for the lab's host config, environment for the lab) for what `allocate` handed out."""
    if not devices:
        return [], {}
    if devices == "all":
        return [dict(ALL_GPUS)], dict(NVIDIA_ENV)
    request = {**ALL_GPUS, "Count": 0, "DeviceIDs": list(devices)}
    return [request], {"NVIDIA_VISIBLE_DEVICES": ",".join(devices), "NVIDIA_DRIVER_CAPABILITIES": NVIDIA_CAPABILITIES}
