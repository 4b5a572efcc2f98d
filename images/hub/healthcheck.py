"""Docker HEALTHCHECK of the hub: healthy only when the hub answers /hub/health through its proxy."""

import os
import sys
import urllib.request

# The stack sets HUBFORGE_HEALTH_URL when it moves the base URL or the port; the default is the image's.
URL = os.environ.get("HUBFORGE_HEALTH_URL", "http://127.0.0.1:8000/hub/health")

try:
    with urllib.request.urlopen(URL, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # any failure is "unhealthy", with the reason in `docker inspect`
    print(f"unhealthy: {URL}: {exc}", file=sys.stderr)
    sys.exit(1)
