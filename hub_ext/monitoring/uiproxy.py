"""Prometheus' pages for hub admins only: a small reverse proxy that the hub runs as its managed service `prometheus`.

The hub's proxy sends /services/prometheus/ here (on the service's own origin when labs have subdomains). A visitor
signs in through the hub (OAuth, HubOAuthenticated); one whose token lacks `access:services!service=prometheus`, which
JupyterHub's admin role has and the user role does not, gets 403. What passes goes to Prometheus on the stack network,
which serves under the same path (--web.route-prefix), and is never published on a port of the host.

Run by the hub as `python3 -m hub_ext.monitoring.uiproxy --upstream http://prometheus:9090`; JupyterHub gives it its
address, prefix, token and OAuth client in JUPYTERHUB_* variables.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from hub_ext.monitoring import ACCESS_SCOPE, UIPROXY_PORT, UPSTREAM

log = logging.getLogger(__name__)
# Never passed on: hop-by-hop headers, the hub's cookies and tokens (Prometheus needs none), and the encoding (the
# client here asks for plain bytes and gives them back as they are).
DROPPED_REQUEST = frozenset(
    {"host", "cookie", "authorization", "connection", "keep-alive", "te", "upgrade", "accept-encoding"}
)
DROPPED_RESPONSE = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"})


class AppsHubAuth:
    """The application's HubOAuth (settings["hub_auth"]), not JupyterHub's process-wide singleton: what make_app was
    given is what decides."""

    def initialize(self) -> None:
        self.hub_auth = self.settings["hub_auth"]


class Callback(AppsHubAuth, HubOAuthCallbackHandler):
    """The end of the hub's OAuth dance: sets this origin's login cookie, then back to the page first asked for."""


class PrometheusProxy(AppsHubAuth, HubOAuthenticated, web.RequestHandler):
    """Every path under the prefix: the visitor's hub login checked, then the request forwarded to Prometheus."""

    # Only the access scope decides (JupyterHub's role-based rule), never a list of names or the admin flag.
    allow_all = False

    @property
    def hub_scopes(self) -> set[str]:
        return {ACCESS_SCOPE}

    def check_xsrf_cookie(self) -> None:
        """Prometheus' own forms post queries; they carry the login cookie of this origin alone, which no other site
        can make a browser send (SameSite=Lax), and Prometheus behind it changes nothing (no admin API)."""

    async def forward(self) -> None:
        upstream: str = self.settings["upstream"]
        request = HTTPRequest(
            upstream + self.request.uri,
            method=self.request.method,
            headers={k: v for k, v in self.request.headers.get_all() if k.lower() not in DROPPED_REQUEST},
            body=self.request.body if self.request.method in ("POST", "PUT") else None,
            follow_redirects=False,
            decompress_response=False,
            request_timeout=120,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:
            raise web.HTTPError(502, f"Prometheus at {upstream} does not answer ({exc})") from None
        if response.code == 599:
            raise web.HTTPError(502, f"Prometheus at {upstream} does not answer ({response.error})")
        self.set_status(response.code, response.reason)
        self.clear_header("Content-Type")
        for name, value in response.headers.get_all():
            if name.lower() not in DROPPED_RESPONSE:
                self.add_header(name, value)
        if response.body and self.request.method != "HEAD":
            self.write(response.body)

    @web.authenticated
    async def get(self, path: str) -> None:
        await self.forward()

    @web.authenticated
    async def head(self, path: str) -> None:
        await self.forward()

    @web.authenticated
    async def post(self, path: str) -> None:
        await self.forward()


def make_app(hub_auth: HubOAuth, upstream: str) -> web.Application:
    prefix = hub_auth.base_url if hub_auth.base_url.endswith("/") else hub_auth.base_url + "/"
    return web.Application(
        [
            (prefix + "oauth_callback", Callback),
            (prefix + "(.*)", PrometheusProxy),
        ],
        hub_auth=hub_auth,
        upstream=upstream.rstrip("/"),
        cookie_secret=os.urandom(32),  # this process' own login cookies: a restart signs admins in again, silently
    )


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", default=UPSTREAM, help="Prometheus' address on the stack network")
    args = parser.parse_args(argv)
    hub_auth = HubOAuth(cache_max_age=60)  # JUPYTERHUB_* from the hub: API, token, prefix, client, callback
    bind = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", ""))  # the service's `url` in jupyterhub_config.py
    make_app(hub_auth, args.upstream).listen(bind.port or UIPROXY_PORT, bind.hostname or "127.0.0.1", xheaders=True)
    log.info("Prometheus' pages at %s for holders of %s, from %s", hub_auth.base_url, ACCESS_SCOPE, args.upstream)
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main())
