"""Hub settings: read from the environment once, parsed and checked, then given to the traits (settings.hub).

The lowest floor of hub_ext: it imports nothing of hub_ext but naming."""
