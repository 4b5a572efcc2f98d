"""`invoke policies` and `invoke restore --user` inside the hub's container: the hub's own API, from the host.

    python3 -m hub_ext.hub.admincli export          -> {"groups": {NAME: policy, ...}} (the groups that have one)
    python3 -m hub_ext.hub.admincli import JSON     -> one result a group: set (or removed, for null) or refused
    python3 -m hub_ext.hub.admincli stop USER       -> {"user": USER, "known": bool, "stopped": bool}: the user's
                                                       server stopped, as the admin page stops it (exit 1: it did not)

It calls http://127.0.0.1:8081 with the token of the hub's `hubforge-cli` service (made at the hub's first start,
kept in its data volume, scoped to groups, reading users and stopping servers), so every write goes through the same
checks as the policies page and JupyterHub's REST API. Prints one JSON document; exits 1 when a group was refused.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hub_ext.settings.hub import from_environ

TOKEN_FILE = Path("/srv/jupyterhub/data/cli-token")  # the hub's data volume (jupyterhub_config.py: DATA)
HUB_API = "http://127.0.0.1:8081"


def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """hubforge's own API (hub_ext.web)."""
    return call_hub(method, f"hubforge/{path}", body)


def call_hub(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """JupyterHub's REST API, under /hub/api/."""
    base = from_environ(os.environ).base_url
    request = urllib.request.Request(
        f"{HUB_API}{base}hub/api/{path}",
        method=method,
        data=None if method == "GET" else json.dumps(body).encode(),
        headers={"Authorization": f"token {TOKEN_FILE.read_text().strip()}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def export() -> dict[str, Any]:
    status, listing = call("GET", "policies")
    if status != 200:
        raise SystemExit(f"the hub answered {status}: {listing}")
    return {"groups": {group["name"]: group["policy"] for group in listing["groups"] if group["policy"] is not None}}


def import_(document: Any) -> list[dict[str, Any]]:
    groups = document.get("groups") if isinstance(document, dict) else None
    if not isinstance(groups, dict):
        raise SystemExit('expected {"groups": {NAME: {policy fields} or null, ...}}')
    results = []
    for name, policy in groups.items():
        status, answer = call("PUT", f"policies/{urllib.request.quote(str(name), safe='')}", policy)
        if status in (200, 201):
            results.append({"group": name, "result": "created" if status == 201 else "set", **answer})
        else:
            results.append({"group": name, "result": "refused", "reason": (answer or {}).get("message", status)})
    return results


def stop(name: str, timeout: float = 120) -> dict[str, Any]:
    """Stop `name`'s server (JupyterHub's DELETE .../server) and wait until the hub has it stopped."""
    user = urllib.request.quote(name, safe="")
    status, model = call_hub("GET", f"users/{user}")
    if status == 404:
        return {"user": name, "known": False, "stopped": True}
    if status != 200:
        raise SystemExit(f"the hub answered {status} for user {name!r}: {model}")
    if not (model.get("server") or model.get("pending")):
        return {"user": name, "known": True, "stopped": True}
    status, answer = call_hub("DELETE", f"users/{user}/server")
    if status not in (202, 204, 400):  # 400: not running any more
        raise SystemExit(f"the hub answered {status} when asked to stop {name!r}'s server: {answer}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, model = call_hub("GET", f"users/{user}")
        if status == 200 and not (model.get("server") or model.get("pending")):
            return {"user": name, "known": True, "stopped": True}
        time.sleep(0.5)
    return {"user": name, "known": True, "stopped": False}


def main(argv: list[str]) -> int:
    if argv[:1] == ["export"]:
        print(json.dumps(export()))
        return 0
    if argv[:1] == ["import"] and len(argv) == 2:
        results = import_(json.loads(argv[1]))
        print(json.dumps(results))
        return 1 if any(r["result"] == "refused" for r in results) else 0
    if argv[:1] == ["stop"] and len(argv) == 2:
        result = stop(argv[1])
        print(json.dumps(result))
        return 0 if result["stopped"] else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
