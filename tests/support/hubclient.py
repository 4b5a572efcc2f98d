"""A small HTTP client for a live hub, as a user's browser or script would talk to it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import socket
import threading
import time
import uuid
from urllib.parse import unquote, urlparse

import requests
import urllib3
from jupyterhub.utils import subdomain_hook_idna
from requests.utils import requote_uri

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the stack's certificate is self-signed


def lab_url(base: str, path: str) -> str:
    """The URL of `path` on the stack at `base`. A lab's path, `user/<name>/...`, is on the lab's own origin
    when the hub runs with subdomains (its base is a *.localhost name, as the harness starts it):
    https://<name>.hub.localhost:<port>/user/<name>/... -- named by JupyterHub's own subdomain rule."""
    path = path.lstrip("/")
    parsed = urlparse(base)
    if path.startswith("user/") and (parsed.hostname or "").endswith(".localhost"):
        name = unquote(path.split("/")[1])
        return f"{parsed.scheme}://{subdomain_hook_idna(name, parsed.netloc, 'user')}/{path}"
    return base + path


def plain_get(url: str, **kwargs) -> requests.Response:
    """One anonymous GET, as a browser with no cookies would make it (self-signed certificate accepted)."""
    session = requests.Session()
    session.trust_env = False
    return session.get(url, verify=False, timeout=30, **kwargs)


class HubSession:
    """One user's cookie session with the hub (form posts carry the page's _xsrf)."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.http = requests.Session()
        self.http.verify = False
        self.http.trust_env = False  # the host's proxy and CA settings are not for loopback

    def url(self, path: str) -> str:
        return self.base + path.lstrip("/")

    def xsrf(self, path: str) -> str:
        page = self.http.get(self.url(path), timeout=30)
        page.raise_for_status()
        match = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        return match.group(1) if match else self.http.cookies.get("_xsrf", "")

    def signup(
        self, username: str, password: str, bootstrap_secret: str = "", confirmation: str | None = None
    ) -> requests.Response:
        token = self.xsrf("hub/signup")
        return self.http.post(
            self.url("hub/signup"),
            timeout=30,
            data={
                "_xsrf": token,
                "username": username,
                "signup_password": password,
                "signup_password_confirmation": password if confirmation is None else confirmation,
                "bootstrap_secret": bootstrap_secret,
            },
        )

    def login(self, username: str, password: str) -> requests.Response:
        token = self.xsrf("hub/login")
        return self.http.post(
            self.url("hub/login"),
            data={"_xsrf": token, "username": username, "password": password},
            allow_redirects=False,
            timeout=30,
        )

    def approve(self, username: str) -> requests.Response:
        """As an admin: approve a pending signup (an explicit POST with the page's XSRF token)."""
        token = self.xsrf("hub/authorize")
        response = self.http.post(self.url(f"hub/authorize/{username}/approve"), data={"_xsrf": token}, timeout=30)
        response.raise_for_status()
        return response

    def hub_xsrf(self) -> str:
        """The hub's _xsrf cookie; a sign-in that ends in the lab also holds the lab's, set for <user>.<hub host>."""
        host = urlparse(self.base).hostname
        found = [c.value for c in self.http.cookies if c.name == "_xsrf" and c.domain.lstrip(".") == host]
        return found[0] if found else self.http.cookies.get("_xsrf", "")

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"X-XSRFToken": self.hub_xsrf(), **kwargs.pop("headers", {})}
        return self.http.request(method, self.url(f"hub/api/{path.lstrip('/')}"), headers=headers, timeout=60, **kwargs)

    def new_token(self, username: str) -> str:
        response = self.api("POST", f"users/{username}/tokens", json={"note": "tests", "expires_in": 3600})
        response.raise_for_status()
        return response.json()["token"]


class HubAPI:
    """Token-authenticated REST calls, as a script would make them."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base = base_url
        self.http = requests.Session()
        self.http.verify = False
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"token {token}"

    def url(self, path: str) -> str:
        return lab_url(self.base, path)

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.http.request(method, self.url(path), timeout=kwargs.pop("timeout", 60), **kwargs)

    def user(self, name: str) -> dict:
        response = self.request("GET", f"hub/api/users/{name}")
        response.raise_for_status()
        return response.json()

    def start(self, name: str, timeout: float = 180, options: dict | None = None) -> float:
        """Start the user's server (with spawner `options`, e.g. an image choice) and wait until the lab
        answers through the proxy; return seconds taken."""
        started = time.monotonic()
        response = self.request("POST", f"hub/api/users/{name}/server", json=options)
        assert response.status_code in (201, 202), response.text
        return self.wait_ready(name, timeout, started)

    def wait_ready(self, name: str, timeout: float = 180, started: float | None = None) -> float:
        """Wait until the user's server, started by someone else (a sign-in that lands on /hub/spawn), answers
        through the proxy; return seconds taken."""
        started = time.monotonic() if started is None else started
        assert self.user(name)["servers"].get("") is not None, f"{name} has no server, starting or started"
        while time.monotonic() - started < timeout:
            server = self.user(name)["servers"].get("")
            if server and server.get("ready") and self.request("GET", f"user/{name}/api/status").status_code == 200:
                return time.monotonic() - started
            time.sleep(0.25)
        raise AssertionError(f"{name}'s server was not ready after {timeout}s")

    def stop(self, name: str, timeout: float = 120) -> None:
        response = self.request("DELETE", f"hub/api/users/{name}/server")
        assert response.status_code in (202, 204), response.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.user(name)["servers"]:
                return
            time.sleep(0.25)
        raise AssertionError(f"{name}'s server did not stop in {timeout}s")


class KernelClient:
    """A kernel in a user's lab, driven as JupyterLab drives it: REST to start it, the websocket to run code."""

    def __init__(self, api: HubAPI, user: str, kernel_id: str | None = None) -> None:
        self.api, self.user = api, user
        if kernel_id is None:
            response = api.request("POST", f"user/{user}/api/kernels", json={"name": "python3"})
            assert response.status_code == 201, response.text
            kernel_id = response.json()["id"]
        self.id = kernel_id

    def execute(self, code: str, timeout: float = 30) -> str:
        """Run `code` over the kernel's websocket; its stdout plus the result's text/plain."""
        return asyncio.run(self._execute(code, timeout))

    def channel(self, timeout: float = 30) -> KernelChannel:
        """One websocket to the kernel, kept open across calls (as a JupyterLab tab keeps it)."""
        return KernelChannel(self, timeout)

    async def _execute(self, code: str, timeout: float) -> str:
        connection = await self._connect(timeout)
        try:
            return await self._run(connection, code, timeout)
        finally:
            connection.close()

    async def _connect(self, timeout: float):
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        url = requote_uri(
            self.api.url(f"user/{self.user}/api/kernels/{self.id}/channels")
        )  # a name may be unicode or an e-mail
        url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        request = HTTPRequest(
            url,
            validate_cert=False,
            headers={"Authorization": self.api.http.headers["Authorization"]},
            connect_timeout=10,
            request_timeout=timeout,
        )
        return await websocket_connect(request)

    async def _run(self, connection, code: str, timeout: float) -> str:
        msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
        connection.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "session": session,
                        "username": self.user,
                        "msg_type": "execute_request",
                        "version": "5.3",
                        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "buffers": [],
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        output, replied, idle = [], None, False
        deadline = time.monotonic() + timeout
        while not (replied and idle):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no reply from kernel {self.id} within {timeout}s; so far: {output}")
            raw = await asyncio.wait_for(connection.read_message(), remaining)
            if raw is None:
                raise AssertionError(f"the websocket of kernel {self.id} closed; so far: {output}")
            message = json.loads(raw)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["header"]["msg_type"], message["content"]
            if kind == "stream":
                output.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                output.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                raise AssertionError(f"{content['ename']}: {content['evalue']}")
            elif kind == "execute_reply":
                replied = content
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        return "".join(output)


class KernelChannel:
    """A kernel's websocket held open on an event loop of its own: each execute() runs on the same connection."""

    def __init__(self, kernel: KernelClient, timeout: float) -> None:
        self.kernel, self.timeout = kernel, timeout
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)  # tornado asks for the current loop; an earlier asyncio.run() unset it
        self.connection = self.loop.run_until_complete(kernel._connect(timeout))

    def execute(self, code: str) -> str:
        return self.loop.run_until_complete(self.kernel._run(self.connection, code, self.timeout))

    def close(self) -> None:
        self.connection.close()
        self.loop.close()
        asyncio.set_event_loop(None)


class EventListener:
    """One open JupyterLab tab, as far as notifications go: the lab's event stream, read in a thread."""

    def __init__(self, api: HubAPI, user: str) -> None:
        self.events: list[dict] = []
        self.arrived: dict[str, float] = {}  # message -> time.monotonic() when it came in
        self.response = api.http.get(
            api.url(f"user/{user}/hubforge/notifications/events"), stream=True, verify=False, timeout=(5, 60)
        )
        assert self.response.status_code == 200, self.response.text
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    self.arrived.setdefault(event.get("message"), time.monotonic())
                    self.events.append(event)
        except (requests.RequestException, AttributeError):
            pass  # closed by the test

    def wait_for(self, message: str, timeout: float = 3.0) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("message") == message:
                    return event
            time.sleep(0.05)
        return None

    def close(self) -> None:
        """Shut the stream's socket first: closing the response alone waits for the reader's read to time out."""
        connection = getattr(self.response.raw, "_connection", None)
        with contextlib.suppress(OSError, AttributeError):
            connection.sock.shutdown(socket.SHUT_RDWR)
        self.response.close()
