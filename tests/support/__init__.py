"""What the tests share: the live stack, the hub clients, the user simulator, more Docker engines for multi-node
swarms, the OpenID Connect provider, and small helpers. Test modules import from here; nothing here is a test."""
