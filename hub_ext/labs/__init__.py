"""What a lab is, as data: its runtime (mounts, limits, groups), its networks and guard rules, its GPUs.

No Docker calls here: the spawners (hub_ext.spawn) and the guard (hub_ext.helpers.netguard) act on these decisions."""
