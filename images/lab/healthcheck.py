"""Docker HEALTHCHECK of the lab: healthy when the Jupyter server answers its unauthenticated /api."""

import os
import sys
import urllib.parse
import urllib.request

# Spawned by JupyterHub the server listens where JUPYTERHUB_SERVICE_URL says; standalone on :8888/.
service = urllib.parse.urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL") or "http://127.0.0.1:8888/")
path = service.path if service.path.endswith("/") else service.path + "/"
URL = f"http://127.0.0.1:{service.port or 8888}{path}api"

try:
    with urllib.request.urlopen(URL, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # any failure is "unhealthy", with the reason in `docker inspect`
    print(f"unhealthy: {URL}: {exc}", file=sys.stderr)
    sys.exit(1)
