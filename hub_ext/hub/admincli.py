"""`invoke policies` and `invoke restore --user` inside the hub's container: the hub's own API, from the host.

    python3 -m hub_ext.hub.admincli export          -> {"groups": {NAME: policy, ...}} (the groups that have one)
    python3 -m hub_ext.hub.admincli import JSON     -> one result a group: set (or removed, for null) or refused
    python3 -m hub_ext.hub.admincli stop USER       -> {"user": USER, "known": bool, "stopped": bool}: the user's
                                                       server stopped, as the admin page stops it (exit 1: it did not)
    python3 -m hub_ext.hub.admincli canary          -> {"ok": bool, "step": ..., "reason": ..., seconds}: `invoke
                                                       upgrade`'s gate: a throwaway user's lab starts and answers
                                                       through the proxy, then the user and its volumes go

It calls http://127.0.0.1:8081 with the token of the hub's `hubforge-cli` service (made at the hub's first start,
kept in its data volume, scoped to groups, reading users and stopping servers, and to the canary account alone), so
every write goes through the same checks as the policies page and JupyterHub's REST API. Prints one JSON document;
exits 1 when a group was refused.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hub_ext.naming import CANARY_USER
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


PROXY_HTTPS_PORT = 8443  # the proxy's HTTPS port, behind the published one


def proxy_host(environ: Mapping[str, str]) -> str:
    """Where the hub reaches its proxy: this network namespace (Compose, where the hub shares the proxy's), or the
    proxy's service on the stack network (Swarm), as HUBFORGE_PROXY_API names it."""
    return urllib.parse.urlsplit(environ.get("HUBFORGE_PROXY_API", "")).hostname or "127.0.0.1"


def lab_answers(url: str, timeout: float = 10) -> tuple[int, str]:
    """GET a lab's /api (Jupyter Server's version, which needs no login) through the proxy, by the host and path
    its users reach it at: the route, the proxy and the lab all answer. The proxy is the stack's own, so its
    certificate (self-signed, or one for the public name) is not checked here."""
    parsed = urllib.parse.urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(proxy_host(os.environ), PROXY_HTTPS_PORT, timeout=timeout, context=context)
    try:
        connection.request("GET", parsed.path.rstrip("/") + "/api", headers={"Host": parsed.netloc or "hub"})
        answer = connection.getresponse()
        return answer.status, answer.read(2000).decode(errors="replace")
    finally:
        connection.close()


def canary(timeout: float = 180) -> dict[str, Any]:
    """The upgrade's health gate, from inside the new hub: the canary account's lab is started and must answer
    through the proxy. However that ends, the lab is stopped and the account deleted (its volumes with it, by the
    spawner's delete_forever). Each step's failure is one reason."""
    started = time.monotonic()
    name = urllib.request.quote(CANARY_USER, safe="")
    try:
        outcome = canary_steps(name, timeout, started)
    finally:
        stop(CANARY_USER)
        deleted, answer = call_hub("DELETE", f"users/{name}")
    if deleted not in (204, 404) and outcome["ok"]:
        outcome = {**outcome, "ok": False, "step": "delete"}
        outcome["reason"] = f"the hub answered {deleted} when asked to delete {CANARY_USER}: {answer}"
    outcome["seconds"] = round(time.monotonic() - started, 1)
    return outcome


def canary_steps(name: str, timeout: float, started: float) -> dict[str, Any]:
    result: dict[str, Any] = {"ok": False, "user": CANARY_USER}

    def failed(step: str, reason: str) -> dict[str, Any]:
        return {**result, "step": step, "reason": reason}

    status, model = call_hub("GET", f"users/{name}")
    if status == 404:  # else a canary cut short earlier: the name is reserved, so it is nobody else's
        status, model = call_hub("POST", f"users/{name}")
        if status != 201:
            return failed("create", f"the hub answered {status} when asked to create {CANARY_USER}: {model}")
    status, answer = call_hub("POST", f"users/{name}/server")
    if status == 429:  # the hub is at ACTIVE_SERVER_LIMIT (or spawning at its limit): it answered, and said so
        return {**result, "ok": True, "skipped": f"no lab started: {(answer or {}).get('message', 'hub is full')}"}
    if status not in (201, 202, 400):  # 400: already running (a gate cut off earlier)
        return failed("start", f"the hub answered {status} when asked to start the canary lab: {answer}")
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        status, model = call_hub("GET", f"users/{name}")
        server = (model or {}).get("servers", {}).get("") if status == 200 else None
        if server and server.get("ready"):
            url = server.get("url")
            break
        if status == 200 and not server:
            return failed("start", "the canary lab stopped while starting: see `invoke logs hub`")
        time.sleep(0.5)
    if url is None:
        return failed("start", f"the canary lab was not ready within {timeout:.0f}s")
    result["started_s"] = round(time.monotonic() - started, 1)
    try:
        code, body = lab_answers(url)
    except OSError as exc:
        code, body = 0, str(exc)
    result["answered"] = code
    if code != 200 or '"version"' not in body:
        return failed("answer", f"the canary lab did not answer through the proxy ({code}): {body[:200]}")
    return {**result, "ok": True}


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
    if argv == ["canary"]:
        result = canary()
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
