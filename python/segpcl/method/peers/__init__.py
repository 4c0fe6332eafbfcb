"""The methods SeGP-CL is compared with, each in its own module over method/base.py (registered in
method/registry.py PEERS)."""
