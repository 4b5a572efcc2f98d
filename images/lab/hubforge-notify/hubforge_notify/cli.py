"""hubforge-notify: post a notification to your own JupyterLab from a shell or a job (stdlib only)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

TYPES = ("default", "info", "success", "warning", "error", "in-progress")  # same as handlers.TYPES
LOCAL_SERVER = "http://127.0.0.1:8888"


def default_url(env: Mapping[str, str]) -> str:
    """The notify endpoint of the server this process runs under (JupyterHub sets these variables)."""
    base = env.get("JUPYTERHUB_SERVICE_URL") or LOCAL_SERVER + env.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    return base.rstrip("/") + "/hubforge/notify"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hubforge-notify", description="Show a notification in your open JupyterLab tabs."
    )
    parser.add_argument("message", help="1 to 140 characters, shown as plain text")
    parser.add_argument("--type", choices=TYPES, default="default")
    close = parser.add_mutually_exclusive_group()
    close.add_argument("--auto-close", type=int, metavar="MS", help="close after MS milliseconds (default 5000)")
    close.add_argument("--sticky", action="store_true", help="stay until dismissed")
    parser.add_argument("--url", help="notify endpoint (default: from JUPYTERHUB_SERVICE_URL)")
    parser.add_argument("--token", help="API token (default: JUPYTERHUB_API_TOKEN or JPY_API_TOKEN)")
    return parser.parse_args(argv)


def send(url: str, token: str | None, body: dict[str, object]) -> dict[str, object]:
    """POST the notice; raises SystemExit with one line that says what went wrong."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 403:
            raise SystemExit("hubforge-notify: not authorized (check --token or JUPYTERHUB_API_TOKEN)") from None
        try:
            detail = json.load(exc).get("message", exc.reason)
        except ValueError:
            detail = exc.reason
        raise SystemExit(
            f"hubforge-notify: {detail}"
            if exc.code == 400
            else f"hubforge-notify: HTTP {exc.code} from {url}: {detail}"
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            raise SystemExit(f"hubforge-notify: no Jupyter server at {url}") from None
        raise SystemExit(f"hubforge-notify: cannot reach {url}: {exc.reason}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url = args.url or default_url(os.environ)
    token = args.token or os.environ.get("JUPYTERHUB_API_TOKEN") or os.environ.get("JPY_API_TOKEN")
    body: dict[str, object] = {"message": args.message, "type": args.type}
    if args.sticky:
        body["autoClose"] = False
    elif args.auto_close is not None:
        body["autoClose"] = args.auto_close
    reply = send(url, token, body)
    print(f"notified {reply['delivered_to']} open tab(s) (id {reply['id']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
