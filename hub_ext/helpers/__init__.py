"""Commands that run in containers of their own, from the hub image: the network guard on every node, and the
one-shot volume helper (`python3 -m hub_ext.helpers.volumes`) on the node that holds a user's volumes."""
