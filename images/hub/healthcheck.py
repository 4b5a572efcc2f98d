"""Docker HEALTHCHECK of the hub: healthy only when the hub answers /hub/health through its proxy."""

import os
import ssl
import sys
import urllib.parse
import urllib.request

# The stack sets HUBFORGE_HEALTH_URL (HTTPS, base URL); the default is the bare image's.
URL = os.environ.get("HUBFORGE_HEALTH_URL", "http://127.0.0.1:8000/hub/health")
# The hub checks itself on loopback, where its certificate (often self-signed) names the public host.
context = (
    ssl._create_unverified_context() if urllib.parse.urlsplit(URL).hostname in ("127.0.0.1", "localhost") else None
)

try:
    with urllib.request.urlopen(URL, timeout=4, context=context) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # any failure is "unhealthy", with the reason in `docker inspect`
    print(f"unhealthy: {URL}: {exc}", file=sys.stderr)
    sys.exit(1)
