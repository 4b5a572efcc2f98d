"""hub_ext: what hubforge adds to JupyterHub (self-service, broadcast, built-in groups)."""

from __future__ import annotations

__version__ = "0.1.0"
