"""Browsers that reach the hub under another name are sent to its public name, where its cookies live.

With per-user subdomains the hub's cookies are set for `Domain=<public host>`. A browser that opened the hub at
https://127.0.0.1/ (or the host's address) signs in, but drops those cookies, so every form after the login fails
with "XSRF cookie does not match POST argument". So a browser's page request under any other name is redirected
to the same path on the public origin. Token calls (scripts, the labs, the idle culler), the REST API and the
health check answer at any address, as before.
"""

from __future__ import annotations

from urllib.parse import urlsplit

# Paths that answer under any name: what scripts, labs, services and health checks call (they carry tokens, or need
# none), never a page a browser navigates to.
# A lab's jupyterhub-singleuser asks for `hub/api` itself (the hub's version), with no token, at the hub's address
# inside the stack: on Swarm that is an IP, not the "hub" alias.
ANY_HOST_PATHS = ("hub/api", "hub/health", "hub/metrics")


def on_public_host(host_name: str, public_host: str, internal: frozenset[str]) -> bool:
    """The public host itself, a lab's subdomain of it, or a name the stack uses inside (the hub's alias)."""
    host = host_name.lower().rstrip(".")
    return host == public_host or host.endswith("." + public_host) or host in internal


def redirect_target(
    method: str,
    host_name: str,
    uri: str,
    has_token: bool,
    public_origin: str,
    base_url: str,
    internal: frozenset[str] = frozenset({"hub"}),
) -> str | None:
    """Where to send this request instead, or None to serve it here. Only a browser's page request (GET or HEAD,
    no token) under another name than the public one is sent away; `uri` is the path with its query."""
    if method not in ("GET", "HEAD") or has_token:
        return None
    public_host = urlsplit(public_origin).hostname or ""
    if not public_host or on_public_host(host_name, public_host, internal):
        return None
    path = urlsplit(uri).path
    rest = path[len(base_url) :] if path.startswith(base_url) else None
    if rest is not None and any(rest == p or rest.startswith(p + "/") for p in ANY_HOST_PATHS):
        return None
    return public_origin.rstrip("/") + uri


def install(public_origin: str, base_url: str) -> None:
    """Run the check first in every hub page and API handler (JupyterHub's BaseHandler.prepare): JupyterHub offers
    no hook before its own cookie handling, and a handler that answered with the redirect serves nothing else."""
    from jupyterhub.handlers.base import BaseHandler

    if getattr(BaseHandler.prepare, "hubforge_public_host", False):
        return
    original = BaseHandler.prepare

    async def prepare(self):
        request = self.request
        has_token = bool(request.headers.get("Authorization")) or "token" in request.query_arguments
        target = redirect_target(request.method, request.host_name, request.uri, has_token, public_origin, base_url)
        if target:
            self.redirect(target)  # tornado skips the handler's method once prepare() has finished the request
            return
        await original(self)

    prepare.hubforge_public_host = True
    BaseHandler.prepare = prepare
