"""The hub's pages and APIs (tornado handlers): self-service, accounts and approval, broadcast, lab access, metrics.

They act through hub_ext.auth and hub_ext.spawn; the authenticators (hub_ext.authenticators) register them."""
