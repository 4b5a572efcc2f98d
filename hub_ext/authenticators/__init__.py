"""The authenticators JupyterHub loads (c.JupyterHub.authenticator_class): NativeAuthenticator's or OIDC's, each
with hub_ext's rules, and hub_ext.web's pages registered through Authenticator.get_handlers. The top floor."""
