"""hubforge-notify: push notifications into every open JupyterLab tab of a Jupyter server."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "@hubforge/notify"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "hubforge_notify"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Called by jupyter_server once at start (enabled by etc/jupyter/jupyter_server_config.d/hubforge_notify.json)."""
    from .handlers import setup_handlers

    setup_handlers(serverapp.web_app)
    serverapp.log.info("hubforge_notify: POST %shubforge/notify", serverapp.web_app.settings["base_url"])
