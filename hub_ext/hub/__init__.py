"""The hub process itself: its database connections, its start, its TLS certificate, its logo, its public name."""
