"""Self-service and broadcast decisions as data: request validation and result shapes (no I/O here)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hub_ext.naming import MOUNTS, VOLUME_KINDS

MESSAGE_MAX = 140
TYPES = ("default", "info", "success", "warning", "error", "in-progress")
AUTOCLOSE_MAX_MS = 600_000
DELIVERY_TIMEOUT_S = 5.0
VOLUME_DESCRIPTIONS = {
    "home": "Your home folder: shell history, dotfiles, pip --user packages and settings",
    "workspace": "Your notebooks and files (the folder JupyterLab opens)",
    "cache": "Caches (pip, matplotlib, ...): safe to reset, rebuilt on demand",
}


class BadRequest(ValueError):
    """A request the handler answers with 400; the message names the field and the value."""


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"the body is not JSON: got {body[:60]!r}") from None


def volume_kinds(body: Any) -> list[str]:
    """The volume kinds a reset request names: {"volumes": ["workspace", ...]}, each known, no duplicates."""
    if not isinstance(body, dict) or set(body) != {"volumes"}:
        raise BadRequest(f'expected {{"volumes": [...]}} with any of {", ".join(VOLUME_KINDS)}, got {body!r}')
    kinds = body["volumes"]
    if not isinstance(kinds, list) or not kinds:
        raise BadRequest(f"volumes must be a non-empty list, got {kinds!r}")
    for kind in kinds:
        if not isinstance(kind, str):
            raise BadRequest(f"each volume is a name such as 'workspace', got {kind!r}")
        if "/" in kind or "\\" in kind or ".." in kind:
            raise BadRequest(f"volume names are not paths, got {kind!r}")
        if kind not in VOLUME_KINDS:
            raise BadRequest(f"unknown volume {kind!r}; choose from {', '.join(VOLUME_KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise BadRequest(f"a volume is named twice: {kinds!r}")
    return kinds


def volume_listing(
    volumes: dict[str, str],
    sizes: dict[str, int | None],
    quotas: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """What the volume manager shows: kind, Docker name, mount point, description, size (None: unknown), and for a
    quota'd volume its quota and use (`quotas`: kind -> {"quota_bytes", "used_bytes", "held"})."""
    listing = []
    for kind in VOLUME_KINDS:
        entry = {
            "kind": kind,
            "volume": volumes[kind],
            "mount": MOUNTS[kind],
            "description": VOLUME_DESCRIPTIONS[kind],
            "exists": volumes[kind] in sizes,
            "size_bytes": sizes.get(volumes[kind]),
            "quota_bytes": None,
            "held": False,
        }
        quota = (quotas or {}).get(kind)
        if quota:
            entry.update(quota)
            if quota.get("used_bytes") is not None:
                entry["size_bytes"] = quota["used_bytes"]
        listing.append(entry)
    return listing


@dataclass(frozen=True)
class Broadcast:
    message: str
    type: str
    auto_close: int | bool  # milliseconds, or False: stays until dismissed
    recipients: tuple[str, ...] | None  # None: every running server

    def payload(self, sender: str) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "autoClose": self.auto_close, "sender": sender}


def broadcast_request(body: Any, known_users: Iterable[str]) -> Broadcast:
    """Check a broadcast: a 1-140 character message, a known type, auto-close, and recipients."""
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object, got {body!r}")
    unknown_keys = set(body) - {"message", "type", "autoClose", "recipients"}
    if unknown_keys:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown_keys))}")
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        raise BadRequest(f"message must be 1 to {MESSAGE_MAX} characters, got {message!r}")
    message = message.strip()
    if len(message) > MESSAGE_MAX:
        raise BadRequest(f"message must be at most {MESSAGE_MAX} characters, got {len(message)}")
    kind = body.get("type", "default")
    if kind not in TYPES:
        raise BadRequest(f"type must be one of {', '.join(TYPES)}, got {kind!r}")
    auto_close = body.get("autoClose", 5000)
    if auto_close is not False and (
        isinstance(auto_close, bool) or not isinstance(auto_close, int) or not 1 <= auto_close <= AUTOCLOSE_MAX_MS
    ):
        raise BadRequest(f"autoClose must be false or 1 to {AUTOCLOSE_MAX_MS} milliseconds, got {auto_close!r}")
    recipients = body.get("recipients", "all")
    if recipients == "all":
        chosen = None
    elif isinstance(recipients, list) and recipients and all(isinstance(r, str) for r in recipients):
        known = set(known_users)
        strangers = [r for r in recipients if r not in known]
        if strangers:
            raise BadRequest(f"unknown recipients: {', '.join(map(repr, strangers))}")
        chosen = tuple(dict.fromkeys(recipients))
    else:
        raise BadRequest(f'recipients must be "all" or a non-empty list of user names, got {recipients!r}')
    return Broadcast(message, kind, auto_close, chosen)
