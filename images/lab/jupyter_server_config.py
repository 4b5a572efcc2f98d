"""Server settings baked into every lab image (the hub may add more through the spawner)."""

c = get_config()  # noqa: F821 -- provided by Jupyter's config loader

# The workspace volume is the notebook directory; home and cache are separate volumes.
c.ServerApp.root_dir = "/home/lab/workspace"
c.ServerApp.terminado_settings = {"shell_command": ["/bin/bash", "-l"]}
# No telemetry or update checks from inside a team's hub.
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
# Served behind the hub's HTTPS proxy: the hub's security headers, and JupyterHub's own frame policy for
# single-user servers, 'none'. No page may frame a lab, the hub's own included: a framed lab could be made
# to act for its viewer by clicks the viewer does not see.
c.ServerApp.tornado_settings = {
    "headers": {
        "Strict-Transport-Security": "max-age=31536000",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "frame-ancestors 'none'",
    }
}
