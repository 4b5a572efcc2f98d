"""Content-hash keys: a pure function of what an image is made from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

KEY_LENGTH = 20  # hex characters of sha256 kept in the local tag: 80 bits (remote addresses use all 256)


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """Everything a key is computed from. Two manifests with equal fields give equal keys."""

    target: str
    dockerfile: str  # the rendered Dockerfile ("" for the base rootfs)
    inputs: Mapping[str, str]  # path -> sha256 of its bytes
    build_args: Mapping[str, str]
    parent_key: str | None

    def canonical(self) -> bytes:
        return json.dumps(
            {
                "target": self.target,
                "dockerfile": digest_bytes(self.dockerfile.encode()),
                "inputs": dict(sorted(self.inputs.items())),
                "build_args": dict(sorted(self.build_args.items())),
                "parent": self.parent_key,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    def key(self) -> str:
        """The local tag: short enough to read, and only ever compared with images this machine built or checked."""
        return self.full_key()[:KEY_LENGTH]

    def full_key(self) -> str:
        """The whole sha256: the address in a registry, where 80 bits would let whoever pushes there search for
        a second set of inputs under the same tag."""
        return digest_bytes(self.canonical())

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "key": self.key(),
            "dockerfile": digest_bytes(self.dockerfile.encode()),
            "inputs": dict(sorted(self.inputs.items())),
            "build_args": dict(sorted(self.build_args.items())),
            "parent": self.parent_key,
        }


def explain(previous: Mapping | None, current: Manifest) -> list[str]:
    """Why `current` differs from the manifest of the last build of the same target, in words."""
    if previous is None:
        return ["never built here before"]
    now = current.to_json()
    reasons: list[str] = []
    if previous.get("dockerfile") != now["dockerfile"]:
        reasons.append("the rendered Dockerfile changed")
    old_inputs, new_inputs = previous.get("inputs", {}), now["inputs"]
    for path in sorted(set(old_inputs) | set(new_inputs)):
        if path not in old_inputs:
            reasons.append(f"{path} is a new input")
        elif path not in new_inputs:
            reasons.append(f"{path} is no longer an input")
        elif old_inputs[path] != new_inputs[path]:
            reasons.append(f"{path} changed")
    old_args, new_args = previous.get("build_args", {}), now["build_args"]
    for name in sorted(set(old_args) | set(new_args)):
        if old_args.get(name) != new_args.get(name):
            reasons.append(f"build arg {name} changed ({old_args.get(name)!r} -> {new_args.get(name)!r})")
    if previous.get("parent") != now["parent"]:
        reasons.append(f"parent changed ({previous.get('parent')} -> {now['parent']})")
    return reasons or ["the image for this key is missing (removed or never pushed here)"]
