#!/bin/sh
# Lab entry point: the JupyterHub single-user server when spawned by the hub, else a standalone JupyterLab.
set -e
if [ -n "${JUPYTERHUB_API_TOKEN:-}" ]; then
    exec jupyterhub-singleuser "$@"
fi
exec jupyter lab --ip=0.0.0.0 --port=8888 --no-browser "$@"
