"""The spawners: one lab container (Compose) or service (Swarm) per user, made from hub_ext.labs' decisions."""
