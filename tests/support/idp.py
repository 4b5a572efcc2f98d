"""The tests' OpenID Connect provider (images/idp: oidc-provider), in a stack's compose.override.yml, as an operator
would run Keycloak next to the hub: on the stack's network as `idp` for the hub, on a published port for browsers.

Its accounts, passwords and groups are a JSON file that it reads at every request: `Idp.set_groups` moves a user
between groups while it runs, as an administrator would at the provider.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from urllib.parse import urljoin

import requests

from hubforge.imagebuild.targets import Graph

from .hubclient import HubSession
from .livestack import built_refs, free_port

CLIENT_ID = "hubforge-tests"
HUB_UID = 1000  # the hub reads OIDC_CLIENT_SECRET_FILE as this user


def idp_image() -> str:
    """The ref of the idp's current key (built by `invoke build --target idp`, which `invoke test` runs)."""
    return built_refs(Graph().select("idp", None), "invoke build --target idp")["idp"]


@dataclass
class Idp:
    folder: Path
    port: int = field(default_factory=free_port)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    users: dict[str, dict] = field(default_factory=dict)
    hub_origin: str = ""  # https://hub.localhost:<port>, once the stack's port is known

    @property
    def issuer(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def secret_file(self) -> Path:
        return self.folder / "client-secret"

    def env(self, **settings: str) -> dict[str, str]:
        """The hub's .env for this provider; `settings` add or override OIDC_* values."""
        return {
            "AUTHENTICATOR": "oidc",
            "OIDC_ISSUER": self.issuer,
            "OIDC_INTERNAL_URL": f"http://idp:{self.port}",  # the hub reaches it by its service name
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET_FILE": str(self.secret_file),
            "OIDC_SCOPES": "openid profile email groups",
            "OIDC_START_WAIT": "60",
            **settings,
        }

    def add_user(
        self, username: str, password: str, groups: list[str], email: str = "", preferred_username: str = ""
    ) -> None:
        self.users[username] = {
            "username": username,
            "password": password,
            "groups": list(groups),
            "email": email or f"{username}@example.org",
            **({"preferred_username": preferred_username} if preferred_username else {}),
        }

    def set_groups(self, username: str, groups: list[str]) -> None:
        self.users[username]["groups"] = list(groups)
        self.write(self.hub_origin)

    def write(self, hub_origin: str) -> None:
        """The provider's JSON file (written whole, then renamed: it is read at every request)."""
        self.hub_origin = hub_origin
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o755)
        config = {
            "issuer": self.issuer,
            "port": self.port,
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "client_secret": self.secret,
                    "client_name": "hubforge",
                    "redirect_uris": [f"{hub_origin}/hub/oauth_callback"],
                    "post_logout_redirect_uris": [f"{hub_origin}/"],
                }
            ],
            "users": list(self.users.values()),
        }
        staged = self.folder / "config.json.tmp"
        staged.write_text(json.dumps(config, indent=1))
        os.chmod(staged, 0o644)
        staged.replace(self.folder / "config.json")
        self.secret_file.write_text(self.secret + "\n")
        os.chmod(self.secret_file, 0o400)
        os.chown(self.secret_file, HUB_UID, HUB_UID)

    def override(self, project: str) -> str:
        """compose.override.yml: the provider joins the stack as the service `idp`."""
        return f"""services:
  idp:
    image: {idp_image()}
    read_only: true
    cap_drop: [ALL]
    ports: ["127.0.0.1:{self.port}:{self.port}"]
    volumes: ["{self.folder}:/etc/idp:ro"]
    networks:
      hub:
        aliases: [idp]
    labels: {{hubforge.project: "{project}", hubforge.role: idp}}
"""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.issuer + "/.well-known/openid-configuration", timeout=3).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the idp did not answer at {self.issuer} in {timeout} s")


def prepare(idp: Idp):
    """For start_stack: write the provider's files once the stack's ports are known."""

    def write(options) -> None:
        port = "" if options.https_port == 443 else f":{options.https_port}"
        idp.write(f"https://hub.localhost{port}")
        (options.run_dir / "compose.override.yml").write_text(idp.override(options.project))

    return write


_FORM = re.compile(r'<form[^>]*action="([^"]+)"', re.I)


def sign_in(base_url: str, username: str, password: str) -> tuple[HubSession, requests.Response]:
    """The code flow as a browser makes it: the hub sends us to the provider, we post its login form, the provider
    sends us back to the hub's callback. Returns the session and the hub's last answer (its page, or its refusal)."""
    session = HubSession(base_url)
    page = session.http.get(session.url("hub/oauth_login"), timeout=30)
    match = _FORM.search(page.text)
    assert page.status_code == 200 and match, (
        f"no provider login form at {page.url}: {page.status_code} {page.text[:300]}"
    )
    answer = session.http.post(
        urljoin(page.url, unescape(match.group(1))), timeout=60, data={"username": username, "password": password}
    )
    return session, answer
