"""The monitoring profile's parts that run in the hub: Prometheus' pages behind the hub's login (uiproxy).

This package's own names are standard library only, so that the host (hubforge.deploy) may import them."""

SERVICE_NAME = "prometheus"  # the hub's service, and the stack's Prometheus service on its network
PROMETHEUS_PORT = 9090
UPSTREAM = f"http://{SERVICE_NAME}:{PROMETHEUS_PORT}"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"  # JupyterHub's admin role has it (access:services)
UIPROXY_PORT = 9095  # where the hub runs the proxy, on its own loopback
UIPROXY_MODULE = f"{__name__}.uiproxy"  # what the hub runs (`python3 -m`) as its managed service


def service_host(name: str, hub_host: str) -> str:
    """The host of a hub service when labs have subdomains: JupyterHub's subdomain_hook_idna for a plain ASCII name
    (`prometheus--service.hub.localhost`), which is what the hub's proxy routes (tests/unit/test_monitoring.py)."""
    return f"{name}--service.{hub_host}"
